package main

// The serve-* modes load a plugin written in another language (Plinth's Rust plugins served
// with plinth_subprocess::serve) with go-plugin's own client, and print what a Go host saw as
// one JSON object: the answers, the negotiated version, what arrived through SyncStdout and
// SyncStderr, every line the host's hclog logger wrote (JSON), and how long Kill took.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type observed struct {
	logs, stdout, stderr syncBuffer
	report               map[string]interface{}
}

func (o *observed) client(path string, set map[int]plugin.PluginSet, mtls bool) *plugin.Client {
	o.report = map[string]interface{}{}
	return plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  shared.Handshake,
		VersionedPlugins: set,
		Cmd:              exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         mtls,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: "host", Level: hclog.Trace, Output: &o.logs, JSONFormat: true,
		}),
		SyncStdout: &o.stdout,
		SyncStderr: &o.stderr,
	})
}

func (o *observed) finish(client *plugin.Client) {
	began := time.Now()
	client.Kill()
	o.report["kill_ms"] = time.Since(began).Milliseconds()
	o.report["exited"] = client.Exited()
	o.report["stdout"] = o.stdout.String()
	o.report["stderr"] = o.stderr.String()
	var logs []map[string]interface{}
	for _, line := range strings.Split(strings.TrimSpace(o.logs.String()), "\n") {
		var entry map[string]interface{}
		if json.Unmarshal([]byte(line), &entry) == nil {
			logs = append(logs, entry)
		}
	}
	o.report["logs"] = logs
	out, _ := json.Marshal(o.report)
	fmt.Println(string(out))
}

// waitFor polls until check holds or two seconds pass.
func waitFor(check func() bool) {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && !check(); {
		time.Sleep(10 * time.Millisecond)
	}
}

// serveKV: go-host serve-kv PLUGIN MTLS VERSIONS (VERSIONS comma-separated, e.g. 1,2)
func serveKV(path string, mtls bool, versions string) {
	set := map[int]plugin.PluginSet{}
	for _, piece := range strings.Split(versions, ",") {
		v, err := strconv.Atoi(piece)
		must(err)
		set[v] = plugin.PluginSet{"kv": &shared.KVPlugin{}}
	}
	var o observed
	client := o.client(path, set, mtls)
	rpc, err := client.Client()
	if err != nil {
		o.report["start_error"] = err.Error()
		o.finish(client)
		return
	}
	o.report["version"] = client.NegotiatedVersion()
	o.report["ping"] = rpc.Ping() == nil
	kv := dispense(rpc, "kv").(shared.KV)
	must(kv.Put("hello", []byte("world")))
	value, err := kv.Get("hello")
	must(err)
	o.report["value"] = string(value)
	if _, err := kv.Get("missing"); err != nil {
		o.report["missing_error"] = err.Error()
	}
	must(kv.Put("stdout", []byte("to stdout\n")))
	must(kv.Put("stderr", []byte("to stderr\n")))
	for _, level := range []string{"trace", "debug", "info", "warn", "error"} {
		must(kv.Put("log:"+level, []byte("a "+level+" message")))
	}
	waitFor(func() bool {
		return strings.Contains(o.stdout.String(), "to stdout") &&
			strings.Contains(o.stderr.String(), "to stderr") &&
			strings.Contains(o.logs.String(), "a error message")
	})
	o.finish(client)
}

// serveCounter: go-host serve-counter PLUGIN MTLS
func serveCounter(path string, mtls bool) {
	var o observed
	client := o.client(path, map[int]plugin.PluginSet{1: {"counter": &shared.CounterPlugin{}}}, mtls)
	rpc, err := client.Client()
	if err != nil {
		o.report["start_error"] = err.Error()
		o.finish(client)
		return
	}
	counter := dispense(rpc, "counter").(shared.Counter)
	for _, v := range []int64{1, 2, 39} {
		must(counter.Put("n", v, adder{}))
	}
	n, err := counter.Get("n")
	must(err)
	o.report["value"] = n
	o.finish(client)
}

func serveMain(args []string) bool {
	if len(args) >= 5 && args[1] == "serve-kv" {
		serveKV(args[2], args[3] == "true", args[4])
		return true
	}
	if len(args) >= 4 && args[1] == "serve-counter" {
		serveCounter(args[2], args[3] == "true")
		return true
	}
	_ = os.Stderr
	return false
}
