// Package shared holds what Plinth's Go fixtures and Go hosts agree on: the handshake, the
// interfaces, and their go-plugin gRPC adapters (kv, and counter with a broker callback).
package shared

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/plinth-rs/plinth/tests/go/proto"
)

// Handshake is the handshake every fixture serves with.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "PLINTH_PLUGIN",
	MagicCookieValue: "kv",
}

// KV is a key/value store.
type KV interface {
	Get(key string) ([]byte, error)
	Put(key string, value []byte) error
}

// KVPlugin serves and dispenses KV over gRPC.
type KVPlugin struct {
	plugin.Plugin
	Impl KV
}

// GRPCServer registers the KV service.
func (p *KVPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	proto.RegisterKVServer(s, &kvServer{impl: p.Impl})
	return nil
}

// GRPCClient returns a KV backed by the connection.
func (p *KVPlugin) GRPCClient(ctx context.Context, broker *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &KVClient{client: proto.NewKVClient(c)}, nil
}

type kvServer struct {
	proto.UnimplementedKVServer
	impl KV
}

func (s *kvServer) Get(ctx context.Context, req *proto.GetRequest) (*proto.GetResponse, error) {
	value, err := s.impl.Get(req.Key)
	return &proto.GetResponse{Value: value}, err
}

func (s *kvServer) Put(ctx context.Context, req *proto.PutRequest) (*proto.Empty, error) {
	return &proto.Empty{}, s.impl.Put(req.Key, req.Value)
}

// KVClient is the host side of KV.
type KVClient struct{ client proto.KVClient }

// Get returns the value under key.
func (c *KVClient) Get(key string) ([]byte, error) {
	resp, err := c.client.Get(context.Background(), &proto.GetRequest{Key: key})
	if err != nil {
		return nil, err
	}
	return resp.Value, nil
}

// Put stores value under key.
func (c *KVClient) Put(key string, value []byte) error {
	_, err := c.client.Put(context.Background(), &proto.PutRequest{Key: key, Value: value})
	return err
}

// AddHelper adds two numbers; the host provides it to the counter plugin.
type AddHelper interface {
	Sum(a, b int64) (int64, error)
}

// Counter counts through the host's AddHelper.
type Counter interface {
	Put(key string, value int64, helper AddHelper) error
	Get(key string) (int64, error)
}

// CounterPlugin serves and dispenses Counter over gRPC, with AddHelper through the broker.
type CounterPlugin struct {
	plugin.Plugin
	Impl Counter
}

// GRPCServer registers the Counter service.
func (p *CounterPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	proto.RegisterCounterServer(s, &counterServer{impl: p.Impl, broker: broker})
	return nil
}

// GRPCClient returns a Counter backed by the connection.
func (p *CounterPlugin) GRPCClient(ctx context.Context, broker *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &CounterClient{client: proto.NewCounterClient(c), broker: broker}, nil
}

type counterServer struct {
	proto.UnimplementedCounterServer
	impl   Counter
	broker *plugin.GRPCBroker
}

func (s *counterServer) Put(ctx context.Context, req *proto.CounterPutRequest) (*proto.Empty, error) {
	conn, err := s.broker.Dial(req.AddServer)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	helper := &addHelperClient{client: proto.NewAddHelperClient(conn)}
	return &proto.Empty{}, s.impl.Put(req.Key, req.Value, helper)
}

func (s *counterServer) Get(ctx context.Context, req *proto.CounterGetRequest) (*proto.CounterGetResponse, error) {
	value, err := s.impl.Get(req.Key)
	return &proto.CounterGetResponse{Value: value}, err
}

type addHelperClient struct{ client proto.AddHelperClient }

func (c *addHelperClient) Sum(a, b int64) (int64, error) {
	resp, err := c.client.Sum(context.Background(), &proto.SumRequest{A: a, B: b})
	if err != nil {
		return 0, err
	}
	return resp.R, nil
}

// CounterClient is the host side of Counter; each Put serves the helper on a broker id.
type CounterClient struct {
	client proto.CounterClient
	broker *plugin.GRPCBroker
}

// Put adds value under key, serving helper to the plugin for the duration of the call.
func (c *CounterClient) Put(key string, value int64, helper AddHelper) error {
	id := c.broker.NextId()
	var server *grpc.Server
	ready := make(chan struct{})
	go c.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		server = grpc.NewServer(opts...)
		proto.RegisterAddHelperServer(server, &addHelperServer{impl: helper})
		close(ready)
		return server
	})
	_, err := c.client.Put(context.Background(), &proto.CounterPutRequest{AddServer: id, Key: key, Value: value})
	select {
	case <-ready:
		server.Stop()
	default:
	}
	return err
}

// Get returns the count under key.
func (c *CounterClient) Get(key string) (int64, error) {
	resp, err := c.client.Get(context.Background(), &proto.CounterGetRequest{Key: key})
	if err != nil {
		return 0, err
	}
	return resp.Value, nil
}

type addHelperServer struct {
	proto.UnimplementedAddHelperServer
	impl AddHelper
}

func (s *addHelperServer) Sum(ctx context.Context, req *proto.SumRequest) (*proto.SumResponse, error) {
	r, err := s.impl.Sum(req.A, req.B)
	return &proto.SumResponse{R: r}, err
}
