// netrpc-greeter serves the classic go-plugin example shape over netrpc: a plugin named
// "greeter" with one method, Greet() string, behind the cookie BASIC_PLUGIN=hello, logging
// hclog JSON to stderr.
package main

import (
	"net/rpc"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

type Greeter interface {
	Greet() string
}

type greeter struct{ logger hclog.Logger }

func (g *greeter) Greet() string {
	g.logger.Debug("message from greeter.Greet", "who", "plinth")
	return "Hello!"
}

// greeterRPCServer is what the host's net/rpc client calls, as Plugin.Greet.
type greeterRPCServer struct{ impl Greeter }

func (s *greeterRPCServer) Greet(args interface{}, resp *string) error {
	*resp = s.impl.Greet()
	return nil
}

type greeterPlugin struct{ impl Greeter }

func (p *greeterPlugin) Server(*plugin.MuxBroker) (interface{}, error) {
	return &greeterRPCServer{impl: p.impl}, nil
}

func (p *greeterPlugin) Client(b *plugin.MuxBroker, c *rpc.Client) (interface{}, error) {
	return &greeterRPCClient{client: c}, nil
}

type greeterRPCClient struct{ client *rpc.Client }

func (c *greeterRPCClient) Greet() string {
	var resp string
	if err := c.client.Call("Plugin.Greet", new(interface{}), &resp); err != nil {
		panic(err)
	}
	return resp
}

func main() {
	logger := hclog.New(&hclog.LoggerOptions{
		Level:      hclog.Trace,
		Output:     os.Stderr,
		JSONFormat: true,
	})
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  1,
			MagicCookieKey:   "BASIC_PLUGIN",
			MagicCookieValue: "hello",
		},
		Plugins: map[string]plugin.Plugin{"greeter": &greeterPlugin{impl: &greeter{logger: logger}}},
	})
}
