// The /live page: one websocket to /ws, authenticated by the session cookie.
// It reconnects after a normal close (server restart, network) with a growing delay,
// but not after close code 1008: the session ended, and only a new login helps.
(function () {
  "use strict";

  var root = document.getElementById("live");
  if (!root) { return; }
  var stateEl = document.getElementById("live-state");
  var latencyEl = document.getElementById("live-latency");
  var workerEl = document.getElementById("live-worker");
  var endedEl = document.getElementById("live-ended");
  var noticesEl = document.getElementById("live-notices");
  var chatEl = document.getElementById("chat-log");
  var chatForm = document.getElementById("chat-form");
  var chatText = document.getElementById("chat-text");
  var pingButton = document.getElementById("live-ping");

  var POLICY_VIOLATION = 1008;
  var TOO_BIG = 1009;
  var TRY_AGAIN_LATER = 1013;  // "slow consumer": this page fell too far behind
  var PING_EVERY_MS = 15000;
  var MAX_RETRY_MS = 30000;

  var socket = null;
  var retryMs = 1000;
  var pings = {};        // id -> time sent
  var nextPing = 1;
  var pingTimer = null;
  var ended = false;
  var myId = null;       // the user id from "welcome": our own chat lines say "you"

  function setState(state, text) {
    stateEl.setAttribute("data-state", state);
    stateEl.textContent = text;
  }

  function time() {
    return new Date().toLocaleTimeString();
  }

  function addItem(list, parts) {
    var li = document.createElement("li");
    parts.forEach(function (part) {
      var span = document.createElement("span");
      if (part.cls) { span.className = part.cls; }
      span.textContent = part.text;
      li.appendChild(span);
    });
    list.appendChild(li);
    while (list.children.length > 200) { list.removeChild(list.firstChild); }
    list.scrollTop = list.scrollHeight;
    return li;
  }

  var NOTICES = {
    login: function (m) {
      return "New login to your account" + (m.ip ? " from " + m.ip : "") + (m.user_agent ? " (" + m.user_agent + ")" : "");
    },
    revoked: function () { return "One of your sessions was revoked."; },
    logout_everywhere: function () { return "Log out everywhere: every session of your account is ending."; }
  };

  function notice(text) {
    addItem(noticesEl, [{cls: "meta", text: time()}, {text: text}]);
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  function ping() {
    var id = nextPing++;
    pings[id] = performance.now();
    if (!send({type: "ping", id: id})) { delete pings[id]; }
  }

  // Display names are not unique: "Alice (admin)" may be anyone. Show "you" for our
  // own lines and a short user id for everyone else's.
  function sender(from) {
    if (!from || typeof from !== "object") { return "?"; }
    var name = String(from.name || "");
    var id = String(from.id || "");
    if (myId !== null && id === myId) { return name + " (you)"; }
    return name + " #" + id.slice(0, 6);
  }

  function sessionEnded() {
    ended = true;
    setState("ended", "session ended, log in again");
    endedEl.hidden = false;
    chatText.disabled = true;
    document.getElementById("chat-send").disabled = true;
    pingButton.disabled = true;
  }

  function onMessage(event) {
    var message;
    try { message = JSON.parse(event.data); } catch (e) { return; }
    switch (message.type) {
      case "welcome":
        myId = message.user && message.user.id;
        workerEl.textContent = message.worker === null ? "single process" : "worker " + message.worker;
        break;
      case "pong":
        if (pings[message.id] !== undefined) {
          var ms = performance.now() - pings[message.id];
          delete pings[message.id];
          latencyEl.textContent = ms.toFixed(1) + " ms";
          latencyEl.setAttribute("data-pongs", String(Number(latencyEl.getAttribute("data-pongs") || 0) + 1));
        }
        break;
      case "notice":
        notice((NOTICES[message.event] || function () { return "Session event: " + message.event; })(message));
        break;
      case "chat":
        addItem(chatEl, [{cls: "meta", text: time()}, {cls: "from", text: sender(message.from)}, {text: message.text}]);
        break;
      case "error":
        notice("Error: " + message.error);
        break;
    }
  }

  function connect() {
    if (ended) { return; }
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var opened = false;
    setState("connecting", "connecting\u2026");
    socket = new WebSocket(scheme + "//" + location.host + root.getAttribute("data-ws-path"));
    socket.addEventListener("open", function () {
      opened = true;
      retryMs = 1000;
      setState("connected", "connected");
      ping();
      pingTimer = setInterval(ping, PING_EVERY_MS);
    });
    socket.addEventListener("message", onMessage);
    socket.addEventListener("close", function (event) {
      clearInterval(pingTimer);
      socket = null;
      if (event.code === POLICY_VIOLATION) {
        if (event.reason) { notice("Closed by the server: " + event.reason); }
        sessionEnded();
        return;
      }
      if (event.code === TOO_BIG) { notice("Closed by the server: message too big"); }
      if (event.code === TRY_AGAIN_LATER) { notice("Closed by the server: " + (event.reason || "try again later")); }
      if (!opened) {
        // A refused handshake (403) looks like a network error here: ask whether we
        // are still logged in before trying again.
        fetch("/auth/profile", {credentials: "same-origin", headers: {"Accept": "application/json"}})
          .then(function (response) {
            if (response.status === 401) { sessionEnded(); } else { retry(); }
          })
          .catch(retry);
        return;
      }
      retry();
    });
  }

  function retry() {
    if (ended) { return; }
    setState("disconnected", "disconnected, reconnecting in " + Math.round(retryMs / 1000) + " s");
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
  }

  pingButton.addEventListener("click", ping);
  chatForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = chatText.value.trim();
    if (text && send({type: "chat", text: text})) { chatText.value = ""; }
  });

  connect();
}());
