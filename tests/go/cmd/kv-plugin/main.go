// kv-plugin serves an in-memory KV over go-plugin's gRPC protocol.
package main

import (
	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         plugin.PluginSet{"kv": &shared.KVPlugin{Impl: &shared.MemKV{}}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
