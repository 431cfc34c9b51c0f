// last-words writes many lines to its stderr and then a last one, and exits with status 5,
// for the host's tests that an exit error quotes a bounded tail ending with that last line.
// PLINTH_LAST_WORDS says how and when:
//
//	text   serves KV; a Get of "die" writes 5000 text lines, then "last words: the disk is
//	       full", and exits
//	json   the same through an hclog JSON logger: 300 entries with 1 KiB fields, then an
//	       error entry "last words" with reason "the disk is full"
//	start  writes the text lines before any handshake, and exits
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

// stderr is the real stderr, captured before go-plugin redirects os.Stderr.
var stderr = os.Stderr

func textThenExit() {
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(stderr, "[DEBUG] line %d of what the plugin says before it goes\n", i)
	}
	fmt.Fprintln(stderr, "last words: the disk is full")
	os.Exit(5)
}

func jsonThenExit() {
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "last-words",
		Level:      hclog.Trace,
		Output:     stderr,
		JSONFormat: true,
	})
	padding := strings.Repeat("p", 1024)
	for i := 0; i < 300; i++ {
		logger.Info("working", "step", i, "padding", padding)
	}
	logger.Error("last words", "reason", "the disk is full")
	os.Exit(5)
}

type dying struct {
	shared.MemKV
	die func()
}

func (d *dying) Get(key string) ([]byte, error) {
	if key == "die" {
		d.die()
	}
	return d.MemKV.Get(key)
}

func main() {
	if os.Getenv(shared.Handshake.MagicCookieKey) != shared.Handshake.MagicCookieValue {
		fmt.Fprintln(os.Stderr, "This binary is a plugin. These are not meant to be executed directly.")
		os.Exit(1)
	}
	var die func()
	switch mode := os.Getenv("PLINTH_LAST_WORDS"); mode {
	case "text":
		die = textThenExit
	case "json":
		die = jsonThenExit
	case "start":
		textThenExit()
	default:
		fmt.Fprintf(os.Stderr, "last-words: unknown PLINTH_LAST_WORDS %q\n", mode)
		os.Exit(2)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         plugin.PluginSet{"kv": &shared.KVPlugin{Impl: &dying{die: die}}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
