// bad-plugin misbehaves at start in the way PLINTH_BAD_MODE names, for the host's bad-input
// tests:
//
//	garbage    prints a line that is no handshake
//	short      prints a handshake with too few fields
//	oversized  prints a 70 KiB line without a newline for a while
//	core2      prints a handshake with core protocol version 2
//	version9   serves KV with app protocol version 9 (which hosts do not offer)
//	netrpc     serves KV over the netrpc protocol
//	unreachable prints a handshake naming a socket that does not exist
//	badcert    prints a gRPC handshake whose certificate is not base64
//	notx509    prints a gRPC handshake whose certificate is base64 of a DER sequence that is
//	           no X.509 certificate
//	exit       writes to stderr and exits with status 3 before any handshake
//	silent     never prints a handshake
//	mute       prints a gRPC handshake naming a socket that accepts and never speaks
//	mutetls    the same, with a certificate in the handshake line
//	shortlived serves KV, then exits with status 4 after 300 ms
//	flood      serves KV whose every Get first writes 4 MiB to stdout and 4 MiB of log lines
//	           to stderr
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"math/big"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

// netrpcKV makes the KV plugin servable over netrpc too.
type netrpcKV struct{ shared.KVPlugin }

func (p *netrpcKV) Server(*plugin.MuxBroker) (interface{}, error) { return &kvRPC{impl: p.Impl}, nil }

func (p *netrpcKV) Client(b *plugin.MuxBroker, c *rpc.Client) (interface{}, error) {
	return nil, fmt.Errorf("this fixture only serves")
}

type kvRPC struct{ impl shared.KV }

func (s *kvRPC) Get(key string, resp *[]byte) error {
	value, err := s.impl.Get(key)
	*resp = value
	return err
}

func serveKV(impl shared.KV) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         plugin.PluginSet{"kv": &shared.KVPlugin{Impl: impl}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}

// flooding writes far more output than any pipe buffer holds before answering.
type flooding struct{ shared.MemKV }

// floodStderr is the real stderr, captured before go-plugin redirects os.Stderr.
var floodStderr = os.Stderr

func (f *flooding) Get(key string) ([]byte, error) {
	line := strings.Repeat("o", 1023) + "\n"
	for i := 0; i < 4096; i++ {
		fmt.Fprint(os.Stdout, line)
		fmt.Fprintf(floodStderr, "[DEBUG] flood line %d %s", i, line[:100]+"\n")
	}
	return []byte("flooded"), nil
}

// listenMute serves a socket that accepts connections and never speaks on them, with bytes
// shaped like a certificate in its handshake line when withCert is set.
func listenMute(withCert bool) {
	path := filepath.Join(os.Getenv("PLUGIN_UNIX_SOCKET_DIR"), "mute.sock")
	listener, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad-plugin: cannot listen: %v\n", err)
		os.Exit(1)
	}
	cert := ""
	if withCert {
		cert = selfSignedCertificate()
	}
	fmt.Printf("1|1|unix|%s|grpc|%s\n", path, cert)
	os.Stdout.Sync()
	var held []net.Conn
	for {
		conn, err := listener.Accept()
		if err != nil {
			return
		}
		held = append(held, conn)
	}
}

// selfSignedCertificate is a real X.509 certificate, base64 as go-plugin's handshake carries
// it, so the host gets past parsing it and hangs in the TLS handshake the socket never answers.
func selfSignedCertificate() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad-plugin: cannot make a key: %v\n", err)
		os.Exit(1)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad-plugin: cannot make a certificate: %v\n", err)
		os.Exit(1)
	}
	return base64.RawStdEncoding.EncodeToString(der)
}

func handshake(line string) {
	fmt.Println(line)
	os.Stdout.Sync()
	time.Sleep(time.Hour)
}

func main() {
	if os.Getenv(shared.Handshake.MagicCookieKey) != shared.Handshake.MagicCookieValue {
		fmt.Fprintln(os.Stderr, "This binary is a plugin. These are not meant to be executed directly.")
		os.Exit(1)
	}
	switch mode := os.Getenv("PLINTH_BAD_MODE"); mode {
	case "garbage":
		handshake("hello, I am not a plugin")
	case "short":
		handshake("1|1|unix")
	case "oversized":
		fmt.Print(strings.Repeat("x", 70*1024))
		os.Stdout.Sync()
		time.Sleep(time.Hour)
	case "core2":
		handshake("2|1|unix|/tmp/plinth-none.sock|grpc|")
	case "unreachable":
		handshake("1|1|unix|/nonexistent/plinth/plugin.sock|grpc|")
	case "badcert":
		handshake("1|1|unix|/tmp/plinth-none.sock|grpc|" + strings.Repeat("*not base64*", 6))
	case "notx509":
		der := append([]byte{0x30, 0x40}, bytes.Repeat([]byte{0x02}, 0x40)...)
		handshake("1|1|unix|/tmp/plinth-none.sock|grpc|" + base64.RawStdEncoding.EncodeToString(der))
	case "version9":
		config := shared.Handshake
		config.ProtocolVersion = 9
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: config,
			Plugins:         plugin.PluginSet{"kv": &shared.KVPlugin{Impl: &shared.MemKV{}}},
			GRPCServer:      plugin.DefaultGRPCServer,
		})
	case "netrpc":
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: shared.Handshake,
			Plugins:         plugin.PluginSet{"kv": &netrpcKV{shared.KVPlugin{Impl: &shared.MemKV{}}}},
		})
	case "exit":
		fmt.Fprintln(os.Stderr, "bad-plugin: cannot start: the configuration is missing")
		os.Exit(3)
	case "silent":
		time.Sleep(time.Hour)
	case "mute", "mutetls":
		listenMute(mode == "mutetls")
	case "shortlived":
		go func() {
			time.Sleep(300 * time.Millisecond)
			os.Exit(4)
		}()
		serveKV(&shared.MemKV{})
	case "flood":
		serveKV(&flooding{})
	default:
		fmt.Fprintf(os.Stderr, "bad-plugin: unknown PLINTH_BAD_MODE %q\n", mode)
		os.Exit(2)
	}
}
