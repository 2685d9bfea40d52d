// The peers benchmark's Node side: Express with express-session on its MemoryStore or
// on connect-redis (node-redis client). The same routes as tornado_server.py:
//
//   GET|POST /bare   {"count": 0}, no session middleware on these routes (the denominator)
//   POST /setup      a session holding {count: 1}, its cookie sent (not measured)
//   GET /read        loads the session and answers its counter (no change to the session)
//   POST /login      req.session.regenerate(), then the user id "bench" (no password check)
//
// express-session is used as its README shows: resave false, saveUninitialized false, a
// session cookie (no maxAge). On an unchanged session it still calls store.touch() after
// every request when the store has one: MemoryStore rewrites the entry, connect-redis
// sends EXPIRE. --store redis-notouch sets connect-redis's disableTouch, which makes the
// read a pure read (what the other peers do).
//
//   node bench/peers/express_server.js --port 8894 --store memory
//   node bench/peers/express_server.js --port 8895 --store redis --redis-url redis://127.0.0.1:6379/0
"use strict";

const crypto = require("node:crypto");
const { parseArgs } = require("node:util");
const express = require("express");
const session = require("express-session");

async function main() {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      store: { type: "string", default: "memory" },
      "redis-url": { type: "string" },
    },
  });
  if (!values.port) throw new Error("--port is required");
  if (!["memory", "redis", "redis-notouch"].includes(values.store)) throw new Error(`unknown --store ${values.store}`);

  let store; // undefined: express-session's MemoryStore
  let client = null;
  if (values.store !== "memory") {
    const { createClient } = require("redis");
    const { RedisStore } = require("connect-redis");
    client = createClient({ url: values["redis-url"] });
    client.on("error", (err) => console.error("redis client error", err));
    await client.connect();
    store = new RedisStore({ client, prefix: "bench-express:", disableTouch: values.store === "redis-notouch" });
  }
  const sessions = session({
    name: "sid",
    secret: crypto.randomBytes(32).toString("hex"),
    resave: false,
    saveUninitialized: false,
    store,
  });

  const app = express();
  const bare = (req, res) => res.json({ count: 0 });
  app.get("/bare", bare);
  app.post("/bare", bare);
  app.post("/setup", sessions, (req, res) => {
    req.session.count = 1;
    res.json({ count: 1 });
  });
  app.get("/read", sessions, (req, res) => {
    res.json({ count: req.session.count || 0 });
  });
  app.post("/login", sessions, (req, res, next) => {
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.user = "bench";
      res.json({ user: "bench" });
    });
  });

  const server = app.listen(Number(values.port), values.host, () => {
    console.log(`express peer (express-session, ${values.store}) on http://${values.host}:${values.port}/`);
  });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    if (client) client.quit().catch(() => {});
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
