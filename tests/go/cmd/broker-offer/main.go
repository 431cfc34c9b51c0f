// broker-offer serves KV, and a second KV through its own broker under id 1 — a service the
// plugin offers and the host dials (the reverse of the counter's callback).
package main

import (
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

// offerPlugin registers KV on the main server and offers another KV on broker id 1.
type offerPlugin struct {
	shared.KVPlugin
}

func (p *offerPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	if err := p.KVPlugin.GRPCServer(broker, s); err != nil {
		return err
	}
	offered := &shared.KVPlugin{Impl: &shared.MemKV{}}
	go broker.AcceptAndServe(1, func(opts []grpc.ServerOption) *grpc.Server {
		server := grpc.NewServer(opts...)
		if err := offered.GRPCServer(broker, server); err != nil {
			panic(err)
		}
		return server
	})
	return nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         plugin.PluginSet{"kv": &offerPlugin{shared.KVPlugin{Impl: &shared.MemKV{}}}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
