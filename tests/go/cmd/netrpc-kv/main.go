// netrpc-kv serves a key/value store over netrpc in the shape of go-plugin's own KV example:
// Put takes map[string]interface{}{"key": string, "value": []byte}, Get takes the key and
// returns []byte.
//
// Keys with special meaning: Get("panic") panics (the plugin dies mid-call), Get("sleep")
// sleeps 30 s, Get of a missing key returns an error. Echo writes its argument to stdout and
// stderr, which reach the host over the netrpc stdio streams.
package main

import (
	"fmt"
	"net/rpc"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

type kvServer struct {
	logger hclog.Logger
	mu     sync.Mutex
	data   map[string][]byte
}

func (s *kvServer) Put(args map[string]interface{}, resp *interface{}) error {
	key, ok := args["key"].(string)
	if !ok {
		return fmt.Errorf("put: key is %T, want string", args["key"])
	}
	value, ok := args["value"].([]byte)
	if !ok {
		return fmt.Errorf("put: value is %T, want []byte", args["value"])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[key] = value
	s.logger.Info("put", "key", key, "bytes", len(value))
	return nil
}

func (s *kvServer) Get(key string, resp *[]byte) error {
	switch key {
	case "panic":
		panic("asked to panic")
	case "sleep":
		time.Sleep(30 * time.Second)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	value, ok := s.data[key]
	if !ok {
		return fmt.Errorf("no such key: %s", key)
	}
	*resp = value
	return nil
}

func (s *kvServer) Keys(args interface{}, resp *[]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.data))
	for key := range s.data {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	*resp = keys
	return nil
}

func (s *kvServer) Echo(text string, resp *string) error {
	fmt.Fprintln(os.Stdout, "stdout: "+text)
	fmt.Fprintln(os.Stderr, "stderr: "+text)
	*resp = text
	return nil
}

type kvPlugin struct{ server *kvServer }

func (p *kvPlugin) Server(*plugin.MuxBroker) (interface{}, error) { return p.server, nil }

func (p *kvPlugin) Client(*plugin.MuxBroker, *rpc.Client) (interface{}, error) {
	return nil, fmt.Errorf("this fixture only serves")
}

func main() {
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: os.Stderr, JSONFormat: true})
	server := &kvServer{logger: logger, data: map[string][]byte{}}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         plugin.PluginSet{"kv": &kvPlugin{server: server}},
	})
}
