// noisy serves KV and, on every Get, logs through hclog at each level (JSON on stderr, as
// go-plugin plugins do), logs a plain-text line through the standard logger, and writes to its
// own stdout and stderr (which go-plugin ships to the host over GRPCStdio). A Get of the key
// "panic" panics, which kills the plugin mid-call with a Go panic on its stderr.
package main

import (
	"fmt"
	"log"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

type noisy struct {
	shared.MemKV
	logger hclog.Logger
	plain  *log.Logger
}

func (n *noisy) Get(key string) ([]byte, error) {
	if key == "panic" {
		panic("noisy was asked to panic")
	}
	n.logger.Trace("trace line", "key", key)
	n.logger.Debug("debug line", "key", key, "n", 1)
	n.logger.Info("info line", "key", key)
	n.logger.Warn("warn line", "key", key)
	n.logger.Error("error line", "key", key, "err", "boom")
	n.plain.Println("[WARN] plain text line")
	fmt.Fprintln(os.Stdout, "to stdout")
	fmt.Fprintln(os.Stderr, "to stderr")
	return []byte("noisy:" + key), nil
}

func main() {
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "noisy",
		Level:      hclog.Trace,
		Output:     os.Stderr,
		JSONFormat: true,
	})
	impl := &noisy{logger: logger, plain: log.New(os.Stderr, "", 0)}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         plugin.PluginSet{"kv": &shared.KVPlugin{Impl: impl}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          logger,
	})
}
