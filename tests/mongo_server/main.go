// Command mongo_server runs FerretDB v1 (SQLite backend) on a loopback address,
// so that the Mongo store's tests talk to a real MongoDB wire-protocol server.
//
// Usage: mongo_server -listen 127.0.0.1:27017 -data ./dir
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on (loopback)")
	data := flag.String("data", "./ferretdb-data", "directory for the SQLite files")
	flag.Parse()

	if err := os.MkdirAll(*data, 0o700); err != nil {
		log.Fatal(err)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + *data + "/",
	})
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The fixture waits for this line (and then for a ping) before using the server.
	fmt.Println("listening", f.MongoDBURI())

	if err := f.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
