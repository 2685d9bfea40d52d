// The /live page: one websocket to /ws, authenticated by the session cookie.
// It reconnects after a normal close (server restart, network) with a growing delay,
// but not after close code 1008: the session ended, and only a new login helps.
// It counts down to the session's idle and absolute deadlines (from "welcome",
// "expiring" and "deadlines"), shows "Stay signed in" when the server says the idle
// deadline is near, and "Your session expired" after 1008 "session expired".
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
  var idleEl = document.getElementById("live-idle");
  var absoluteEl = document.getElementById("live-absolute");
  var expiringEl = document.getElementById("live-expiring");
  var expiringText = document.getElementById("live-expiring-text");
  var stayButton = document.getElementById("live-stay");
  var expiredEl = document.getElementById("live-expired");

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
  // Deadlines are the server's Unix seconds; count down in server time: the page was
  // rendered at data-server-time, which fixes this browser's clock offset.
  var clockOffset = Number(root.getAttribute("data-server-time")) - Date.now() / 1000;
  if (!isFinite(clockOffset)) { clockOffset = 0; }
  var deadlines = null;  // {idle: s, absolute: s} as last sent by the server
  var warnedFor = null;  // the idle deadline the "expiring" notice is about
  var tickTimer = null;

  function setState(state, text) {
    stateEl.setAttribute("data-state", state);
    stateEl.textContent = text;
  }

  // Times are written as on /account/sessions: "2026-12-01 07:42 UTC", in the time zone
  // of the visitor's preference (data-timezone), whatever the browser's own zone is.
  var timeZone = root.getAttribute("data-timezone") || "UTC";
  function formatWhen(date) {
    var parts = {};
    try {
      new Intl.DateTimeFormat("en-GB", {
        timeZone: timeZone, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short"
      }).formatToParts(date).forEach(function (p) { parts[p.type] = p.value; });
    } catch (e) {
      return date.toISOString().slice(0, 16).replace("T", " ") + " UTC";
    }
    var zone = root.getAttribute("data-timezone-name") || parts.timeZoneName || timeZone;
    return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + " " + zone;
  }

  function time() {
    return formatWhen(new Date(serverNow() * 1000));
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
      return "New login to your account" + (m.browser ? " in " + m.browser : "") + (m.ip ? ", from " + m.ip : "") + ".";
    },
    revoked: function () { return "One of your browsers was logged out from the sessions page."; },
    logout_everywhere: function () { return "Log out everywhere: every browser of your account is being logged out."; }
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

  function sessionEnded(expired) {
    ended = true;
    setState("ended", expired ? "session expired, log in again" : "session ended, log in again");
    hideExpiring();
    stopCountdown();
    idleEl.textContent = expired ? "expired" : "\u2013";
    absoluteEl.textContent = "\u2013";
    idleEl.classList.remove("soon");
    (expired ? expiredEl : endedEl).hidden = false;
    chatText.disabled = true;
    document.getElementById("chat-send").disabled = true;
    pingButton.disabled = true;
  }

  // -- the session's deadlines ------------------------------------------------------
  function serverNow() {
    return Date.now() / 1000 + clockOffset;
  }

  function clockTime(unixSeconds) {
    return formatWhen(new Date(unixSeconds * 1000));
  }

  // 75 -> "1:15", 3725 -> "1:02:05"
  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var rest = s % 60;
    var mm = h > 0 && m < 10 ? "0" + m : String(m);
    return (h > 0 ? h + ":" : "") + mm + ":" + (rest < 10 ? "0" : "") + rest;
  }

  // For a sentence: "12 seconds", "1 second", "3 minutes".
  function roughly(seconds) {
    var s = Math.max(0, Math.round(seconds));
    if (s >= 90) { s = Math.round(s / 60); return s + " minutes"; }
    return s + (s === 1 ? " second" : " seconds");
  }

  function showDeadline(el, deadline) {
    var left = deadline - serverNow();
    el.setAttribute("data-deadline", String(deadline));
    el.setAttribute("data-left", String(Math.max(0, Math.floor(left))));
    el.textContent = left > 0 ? duration(left) + " left (at " + clockTime(deadline) + ")" : "now";
  }

  function tick() {
    if (!deadlines) { return; }
    showDeadline(idleEl, deadlines.idle);
    showDeadline(absoluteEl, deadlines.absolute);
    // The notice's deadline is the earlier one: the idle deadline never passes the absolute one.
    idleEl.classList.toggle("soon", !expiringEl.hidden);
  }

  function stopCountdown() {
    clearInterval(tickTimer);
    tickTimer = null;
  }

  // Take {idle_deadline, absolute_deadline} from a server message; false if absent.
  function takeDeadlines(message) {
    if (typeof message.idle_deadline !== "number" || typeof message.absolute_deadline !== "number") { return false; }
    var idle = message.idle_deadline;
    var absolute = message.absolute_deadline;
    if (!isFinite(idle) || !isFinite(absolute)) { return false; }
    deadlines = {idle: Math.min(idle, absolute), absolute: absolute};
    if (tickTimer === null) { tickTimer = setInterval(tick, 1000); }
    tick();
    return true;
  }

  function showExpiring() {
    warnedFor = deadlines.idle;
    // At the absolute limit nothing can extend the session: say so, and offer no button.
    var capped = deadlines.idle >= deadlines.absolute;
    expiringText.textContent = capped
      ? "This session reaches its time limit at " + clockTime(deadlines.idle) +
        " (in about " + roughly(deadlines.idle - serverNow()) + "). Log in again after that to go on."
      : "You have been inactive for a while: this session ends at " + clockTime(deadlines.idle) +
        " (in about " + roughly(deadlines.idle - serverNow()) + ").";
    stayButton.hidden = capped;
    stayButton.disabled = false;
    expiringEl.hidden = false;
    tick();
  }

  function hideExpiring() {
    warnedFor = null;
    expiringEl.hidden = true;
    tick();
  }

  function stay() {
    stayButton.disabled = true;  // until the server's answer ("deadlines")
    if (!send({type: "activity"})) { stayButton.disabled = false; }
  }

  function onMessage(event) {
    var message;
    try { message = JSON.parse(event.data); } catch (e) { return; }
    switch (message.type) {
      case "welcome":
        myId = message.user && message.user.id;
        workerEl.textContent = message.worker === null ? "single process" : "worker " + message.worker;
        hideExpiring();  // a new connection: the server warns again if it must
        takeDeadlines(message);
        break;
      case "expiring":
        if (takeDeadlines(message)) { showExpiring(); }
        break;
      case "deadlines":
        if (!takeDeadlines(message)) { break; }
        if (warnedFor === null || deadlines.idle > warnedFor) {
          hideExpiring();
        } else {
          stayButton.disabled = false;  // not moved (asked too soon after the last time): still near
        }
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
        sessionEnded(event.reason === "session expired");
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
  stayButton.addEventListener("click", stay);
  chatForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = chatText.value.trim();
    if (text && send({type: "chat", text: text})) { chatText.value = ""; }
  });

  connect();
}());
