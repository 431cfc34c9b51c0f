// go-host is a Go host built on go-plugin's own client: the peer Plinth's host side is
// measured against, and a check that the fixtures work with a real Go host.
//
//	go-host check DIR          loads kv-plugin, counter-plugin and multi-version from DIR
//	go-host bench PLUGIN N     prints JSON: mean kv.get round trip over N calls and mean
//	                           spawn-to-first-answer over 10 starts, in nanoseconds
//	go-host throughput PLUGIN N
//	                           prints JSON: calls per second with 64 goroutines making about
//	                           N calls in all, and the CPU time the host and the plugin spent
//	                           per call meanwhile (nanoseconds)
//	go-host serve-kv PLUGIN MTLS VERSIONS
//	go-host serve-counter PLUGIN MTLS
//	                           load a non-Go plugin and print what the host saw (serve.go)
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

type adder struct{}

func (adder) Sum(a, b int64) (int64, error) { return a + b, nil }

func start(path string, versioned map[int]plugin.PluginSet, autoMTLS bool) (*plugin.Client, plugin.ClientProtocol) {
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  shared.Handshake,
		VersionedPlugins: versioned,
		Cmd:              exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         autoMTLS,
		Logger:           hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr}),
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		fail("start %s: %v", path, err)
	}
	return client, rpc
}

func kvSet() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{1: {"kv": &shared.KVPlugin{}}}
}

func dispense(rpc plugin.ClientProtocol, name string) interface{} {
	raw, err := rpc.Dispense(name)
	if err != nil {
		fail("dispense %s: %v", name, err)
	}
	return raw
}

func check(dir string) {
	for _, mtls := range []bool{false, true} {
		client, rpc := start(filepath.Join(dir, "kv-plugin"), kvSet(), mtls)
		kv := dispense(rpc, "kv").(shared.KV)
		must(kv.Put("hello", []byte("world")))
		value, err := kv.Get("hello")
		must(err)
		expect(string(value) == "world", "kv get returned %q", value)
		client.Kill()
	}

	client, rpc := start(filepath.Join(dir, "counter-plugin"),
		map[int]plugin.PluginSet{1: {"counter": &shared.CounterPlugin{}}}, false)
	counter := dispense(rpc, "counter").(shared.Counter)
	for _, v := range []int64{1, 2, 39} {
		must(counter.Put("n", v, adder{}))
	}
	n, err := counter.Get("n")
	must(err)
	expect(n == 42, "counter returned %d", n)
	client.Kill()

	client, rpc = start(filepath.Join(dir, "multi-version"), map[int]plugin.PluginSet{
		2: {"kv": &shared.KVPlugin{}},
		3: {"kv": &shared.KVPlugin{}},
	}, false)
	kv := dispense(rpc, "kv").(shared.KV)
	must(kv.Put("k", []byte("v")))
	value, err := kv.Get("k")
	must(err)
	expect(string(value) == "v3:v", "multi-version negotiated %q", value)
	client.Kill()
	fmt.Println("ok")
}

func bench(path string, calls int) {
	client, rpc := start(path, kvSet(), false)
	kv := dispense(rpc, "kv").(shared.KV)
	value := make([]byte, 16)
	must(kv.Put("key16", value))
	for i := 0; i < calls/10+1; i++ { // warm up
		_, err := kv.Get("key16")
		must(err)
	}
	began := time.Now()
	for i := 0; i < calls; i++ {
		_, err := kv.Get("key16")
		must(err)
	}
	rtt := time.Since(began).Nanoseconds() / int64(calls)

	client.Kill()

	const starts = 10
	var startup time.Duration
	for i := 0; i < starts; i++ {
		began := time.Now()
		client, rpc := start(path, kvSet(), false)
		kv := dispense(rpc, "kv").(shared.KV)
		if _, err := kv.Get("missing"); err == nil {
			fail("a missing key was found")
		}
		startup += time.Since(began)
		client.Kill()
	}
	out, _ := json.Marshal(map[string]int64{
		"rtt_ns":     rtt,
		"startup_ns": startup.Nanoseconds() / starts,
	})
	fmt.Println(string(out))
}

// throughput starts the plugin, has 64 goroutines share the client (as many callers of one
// plugin would) for about `calls` gets in all, and prints as JSON the calls per second and
// the CPU time the host and the plugin spent per call meanwhile.
func throughput(path string, calls int) {
	client, rpc := start(path, kvSet(), false)
	defer client.Kill()
	kv := dispense(rpc, "kv").(shared.KV)
	must(kv.Put("key16", make([]byte, 16)))
	const callers = 64
	perCaller := calls/callers + 1
	var wg sync.WaitGroup
	pid := client.ReattachConfig().Pid
	hostCPU, pluginCPU := selfCPU(), processCPU(pid)
	began := time.Now()
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perCaller; i++ {
				_, err := kv.Get("key16")
				must(err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	total := time.Duration(callers * perCaller)
	out, _ := json.Marshal(map[string]int64{
		"calls_per_s_64":   int64(float64(callers*perCaller) / elapsed.Seconds()),
		"host_cpu_ns_64":   ((selfCPU() - hostCPU) / total).Nanoseconds(),
		"plugin_cpu_ns_64": ((processCPU(pid) - pluginCPU) / total).Nanoseconds(),
	})
	fmt.Println(string(out))
}

// selfCPU is the CPU time (user and system) this process has used.
func selfCPU() time.Duration {
	var usage syscall.Rusage
	must(syscall.Getrusage(syscall.RUSAGE_SELF, &usage))
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

// processCPU is the CPU time (user and system) process pid has used, from /proc/PID/stat in
// clock ticks of 10 ms.
func processCPU(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(err)
	// The fields after the command name, which ends with the last ')'.
	text := string(stat)
	fields := strings.Fields(text[strings.LastIndexByte(text, ')')+1:])
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	must(err)
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	must(err)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func must(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func expect(ok bool, format string, args ...interface{}) {
	if !ok {
		fail(format, args...)
	}
}

func fail(format string, args ...interface{}) {
	plugin.CleanupClients()
	fmt.Fprintf(os.Stderr, "go-host: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	defer plugin.CleanupClients()
	if len(os.Args) >= 3 && os.Args[1] == "check" {
		check(os.Args[2])
		return
	}
	if len(os.Args) >= 4 && os.Args[1] == "bench" {
		calls, err := strconv.Atoi(os.Args[3])
		must(err)
		bench(os.Args[2], calls)
		return
	}
	if len(os.Args) >= 4 && os.Args[1] == "throughput" {
		calls, err := strconv.Atoi(os.Args[3])
		must(err)
		throughput(os.Args[2], calls)
		return
	}
	if serveMain(os.Args) {
		return
	}
	fmt.Fprintln(os.Stderr, "usage: go-host check DIR | go-host bench PLUGIN CALLS | go-host throughput PLUGIN CALLS | go-host serve-kv PLUGIN MTLS VERSIONS | go-host serve-counter PLUGIN MTLS")
	os.Exit(2)
}
