// Command mongo_server runs FerretDB v1 (SQLite backend) on a loopback address,
// so that the Mongo store's tests talk to a real MongoDB wire-protocol server.
//
// Usage: mongo_server -listen 127.0.0.1:27017 -data ./dir [-atomic-writes=false]
//
// FerretDB v1 applies each update as read-modify-write with no lock or
// transaction around it (FerretDB/FerretDB#3040): two concurrent updates of one
// document, even `$set`s of different fields or `$inc`s, can lose one another.
// MongoDB applies every single-document write atomically, and the session store
// relies on exactly that. So by default FerretDB listens on an internal loopback
// port and this program forwards the wire protocol to it, holding one mutex from
// each document write (insert, update, delete, findAndModify) until its reply:
// writes then apply one at a time, as atomically as on MongoDB, while reads stay
// concurrent. A store that did its own read-modify-write across two commands
// would still lose updates here, so the concurrency tests keep their meaning.
// -atomic-writes=false serves FerretDB directly, without the proxy.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on (loopback)")
	data := flag.String("data", "./ferretdb-data", "directory for the SQLite files")
	atomicWrites := flag.Bool("atomic-writes", true, "apply document writes one at a time, as MongoDB does per document")
	flag.Parse()

	if err := os.MkdirAll(*data, 0o700); err != nil {
		log.Fatal(err)
	}

	ferretListen := *listen
	var front net.Listener
	if *atomicWrites {
		// Bind the public address first so that a busy port fails fast and clearly.
		var err error
		if front, err = net.Listen("tcp", *listen); err != nil {
			log.Fatal(err)
		}
		ferretListen = "127.0.0.1:0"
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: ferretListen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + *data + "/",
	})
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := f.Run(ctx); err != nil {
			log.Fatal(err)
		}
	}()

	uri := f.MongoDBURI() // waits until FerretDB listens
	if front != nil {
		p := &proxy{backend: strings.TrimSuffix(strings.TrimPrefix(uri, "mongodb://"), "/")}
		uri = "mongodb://" + front.Addr().String() + "/"
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.serve(ctx, front)
		}()
	}

	// The fixture waits for this line (and then for a ping) before using the server.
	fmt.Println("listening", uri)

	wg.Wait()
}

// proxy forwards MongoDB wire-protocol messages to FerretDB, one document write at a time.
type proxy struct {
	backend string
	writes  sync.Mutex
}

func (p *proxy) serve(ctx context.Context, ln net.Listener) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()

	var conns sync.WaitGroup
	defer conns.Wait()

	for {
		client, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				log.Printf("accept: %v", err)
			}
			return
		}

		conns.Add(1)
		go func() {
			defer conns.Done()
			p.handle(ctx, client)
		}()
	}
}

const (
	opMsg           = 2013
	flagMoreToCome  = 1 << 1
	maxMessageBytes = 64 << 20
)

// writeCommands are the commands that change documents (compared lower-cased).
var writeCommands = map[string]bool{"insert": true, "update": true, "delete": true, "findandmodify": true}

func (p *proxy) handle(ctx context.Context, client net.Conn) {
	defer client.Close()

	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", p.backend)
	if err != nil {
		return
	}
	defer server.Close()

	stop := context.AfterFunc(ctx, func() {
		client.Close()
		server.Close()
	})
	defer stop()

	for {
		req, err := readMessage(client)
		if err != nil {
			return
		}

		if err := p.exchange(req, client, server); err != nil {
			return
		}
	}
}

// exchange sends one request and relays its replies; a document write holds the
// mutex until FerretDB has answered it.
func (p *proxy) exchange(req []byte, client, server net.Conn) error {
	if isWrite(req) {
		p.writes.Lock()
		defer p.writes.Unlock()
	}

	if _, err := server.Write(req); err != nil {
		return err
	}

	if moreToCome(req) { // fire-and-forget (w:0): no reply comes
		return nil
	}

	for { // an exhaust reply streams until a message without moreToCome
		reply, err := readMessage(server)
		if err != nil {
			return err
		}

		if _, err := client.Write(reply); err != nil {
			return err
		}

		if !moreToCome(reply) {
			return nil
		}
	}
}

func readMessage(r io.Reader) ([]byte, error) {
	var header [4]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, err
	}

	size := int(binary.LittleEndian.Uint32(header[:]))
	if size < 16 || size > maxMessageBytes {
		return nil, fmt.Errorf("bad message length %d", size)
	}

	msg := make([]byte, size)
	copy(msg, header[:])

	if _, err := io.ReadFull(r, msg[4:]); err != nil {
		return nil, err
	}

	return msg, nil
}

func opCode(msg []byte) uint32 { return binary.LittleEndian.Uint32(msg[12:16]) }

func moreToCome(msg []byte) bool {
	return opCode(msg) == opMsg && len(msg) >= 20 && binary.LittleEndian.Uint32(msg[16:20])&flagMoreToCome != 0
}

// isWrite reports whether an OP_MSG's command (the first key of its body section) writes documents.
func isWrite(msg []byte) bool {
	name, err := commandName(msg)
	return err == nil && writeCommands[strings.ToLower(name)]
}

func commandName(msg []byte) (string, error) {
	if opCode(msg) != opMsg || len(msg) < 21 {
		return "", errors.New("not OP_MSG")
	}

	for pos := 20; pos < len(msg); {
		kind := msg[pos]
		pos++

		if pos+4 > len(msg) {
			break
		}

		size := int(binary.LittleEndian.Uint32(msg[pos : pos+4]))
		if size < 5 || pos+size > len(msg) {
			break
		}

		if kind == 0 { // body: int32 size, then the first element: type byte, cstring name
			name := msg[pos+5 : pos+size]
			if end := bytes.IndexByte(name, 0); end >= 0 {
				return string(name[:end]), nil
			}

			break
		}

		pos += size // kind 1: a document sequence, sized including its length field
	}

	return "", errors.New("no body section")
}
