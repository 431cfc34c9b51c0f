// multi-version serves KV under app protocol versions 2 and 3; each version's values are
// prefixed with "v2:" or "v3:" so a host can tell which one it negotiated.
package main

import (
	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			2: {"kv": &shared.KVPlugin{Impl: &shared.MemKV{Prefix: "v2:"}}},
			3: {"kv": &shared.KVPlugin{Impl: &shared.MemKV{Prefix: "v3:"}}},
		},
		GRPCServer: plugin.DefaultGRPCServer,
	})
}
