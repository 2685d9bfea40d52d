// Command toxiproxy runs Toxiproxy's API server (github.com/Shopify/toxiproxy/v2)
// on a loopback address, so that the fault tests can slow, stall and cut real TCP
// connections between the demo server and its database.
//
// Usage: toxiproxy -host 127.0.0.1 -port 8474
//
// It is cmd/server of the Toxiproxy module without its metrics and flags we do
// not use: build it with `go build` here (tests/toxiproxy_fixture.py does, once
// per change of these files, into .cache/toxiproxy/). The HTTP API is Toxiproxy's:
// POST /proxies, POST /proxies/{name}/toxics, POST /proxies/{name} {"enabled": false}.
package main

import (
	"flag"
	"os"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func main() {
	host := flag.String("host", "127.0.0.1", "address for the HTTP API to listen on")
	port := flag.String("port", "8474", "port for the HTTP API")
	flag.Parse()

	logger := zerolog.New(os.Stderr).With().Timestamp().Logger().Level(zerolog.WarnLevel)
	metrics := toxiproxy.NewMetricsContainer(prometheus.NewRegistry())
	server := toxiproxy.NewServer(metrics, logger)
	server.Listen(*host, *port) // blocks; SIGTERM ends the process (Go's default)
}
