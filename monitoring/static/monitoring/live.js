/* Live updates for every dashboard page.
 *
 * One websocket to /ws/monitoring/ carries the dashboard group's events ({event, payload}).
 * If it cannot connect, drops, or stops answering pings (the ping is answered through the
 * channel layer, so a dead layer is noticed too), the page shows the "live updates degraded"
 * banner, runs the pollers the page registered, and reconnects with backoff; once the socket
 * is back the banner goes and the page resyncs once.
 *
 * window.opsLive:
 *   on(event, fn)             websocket events ("switch.changed", ...), plus "switch" (the
 *                             switch state, from a push or a poll), "state", "connected"
 *                             (first connection) and "resync" (live again after degraded)
 *   whileDegraded(fn, ms)     run fn every ms while degraded (after each run completes)
 *   every(fn, ms)             run fn every ms (ms may be a function of the state)
 *   fetchJSON(url)            same-origin GET, JSON body (also on 503 health answers)
 *   state()                   "connecting" | "live" | "degraded"
 */
(function () {
  "use strict";

  var body = document.body;
  var socketPath = body.dataset.liveSocket;
  if (!socketPath) {
    return;
  }

  var CONNECT_TIMEOUT_MS = 4000;
  var PING_EVERY_MS = 10000;
  var PONG_WITHIN_MS = 5000;
  var RETRY_MIN_MS = 1000;
  var RETRY_MAX_MS = 15000;
  var SWITCH_POLL_MS = 1000;
  var SWITCH_SAFETY_POLL_MS = 15000;
  var STATE_LABELS = { connecting: "connecting…", live: "live", degraded: "degraded" };

  var handlers = {};
  var degradedPollers = [];
  var state = "connecting";
  var socket = null;
  var retryMs = RETRY_MIN_MS;
  var retryTimer = null;
  var pingTimer = null;
  var pongTimer = null;
  var banner = document.getElementById("live-degraded");
  var statusEl = document.getElementById("live-status");

  function on(event, fn) {
    (handlers[event] = handlers[event] || []).push(fn);
  }

  function emit(event, payload) {
    (handlers[event] || []).forEach(function (fn) {
      try {
        fn(payload);
      } catch (err) {
        console.error("opsdash: handler for " + event + " failed", err);
      }
    });
  }

  function setState(next) {
    if (state === next) {
      return;
    }
    var previous = state;
    state = next;
    body.dataset.liveState = next;
    if (statusEl) {
      statusEl.dataset.state = next;
      statusEl.textContent = STATE_LABELS[next];
    }
    if (banner) {
      banner.hidden = next !== "degraded";
    }
    if (next === "degraded") {
      degradedPollers.forEach(startPoller);
    }
    emit("state", next);
    if (next === "live") {
      // Events sent while the socket was down were missed: the page fetches what it shows.
      emit(previous === "degraded" ? "resync" : "connected");
    }
  }

  // --- the websocket ------------------------------------------------------------------------

  function socketUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + socketPath;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    var ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (err) {
      lost(null);
      return;
    }
    socket = ws;
    var openTimer = setTimeout(function () {
      lost(ws);
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = function () {
      clearTimeout(openTimer);
      retryMs = RETRY_MIN_MS;
      setState("live");
      startPings(ws);
    };
    ws.onmessage = function (message) {
      var data;
      try {
        data = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      if (data.event === "pong") {
        clearTimeout(pongTimer);
        return;
      }
      emit(data.event, data.payload || {});
    };
    ws.onclose = function () {
      clearTimeout(openTimer);
      lost(ws);
    };
  }

  /* The socket `ws` is gone (or never came): degrade, and try again later. */
  function lost(ws) {
    if (ws !== socket) {
      return; // an older socket; its successor is already being handled
    }
    socket = null;
    stopPings();
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      try {
        ws.close();
      } catch (err) {
        /* already closed */
      }
    }
    setState("degraded");
    scheduleRetry();
  }

  function scheduleRetry() {
    if (retryTimer) {
      return;
    }
    var wait = retryMs * (0.75 + Math.random() * 0.5);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    retryTimer = setTimeout(connect, wait);
  }

  function startPings(ws) {
    stopPings();
    pingTimer = setInterval(function () {
      if (ws.readyState !== WebSocket.OPEN) {
        return;
      }
      ws.send(JSON.stringify({ type: "ping" }));
      clearTimeout(pongTimer);
      pongTimer = setTimeout(function () {
        lost(ws);
      }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  function stopPings() {
    clearInterval(pingTimer);
    clearTimeout(pongTimer);
    pingTimer = pongTimer = null;
  }

  // --- polling --------------------------------------------------------------------------------

  function startPoller(poller) {
    if (poller.running) {
      return;
    }
    poller.running = true;
    var run = function () {
      Promise.resolve()
        .then(poller.fn)
        .catch(function () {})
        .then(function () {
          if (state === "degraded") {
            setTimeout(run, poller.ms);
          } else {
            poller.running = false;
          }
        });
    };
    run();
  }

  function whileDegraded(fn, ms) {
    var poller = { fn: fn, ms: ms, running: false };
    degradedPollers.push(poller);
    if (state === "degraded") {
      startPoller(poller);
    }
  }

  function every(fn, ms) {
    var run = function () {
      Promise.resolve()
        .then(fn)
        .catch(function () {})
        .then(function () {
          setTimeout(run, typeof ms === "function" ? ms(state) : ms);
        });
    };
    setTimeout(run, typeof ms === "function" ? ms(state) : ms);
  }

  function fetchJSON(url) {
    return fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    }).then(function (response) {
      // A failing health check answers 503 with its document; any other error is no answer.
      if (!response.ok && response.status !== 503) {
        throw new Error(url + " answered " + response.status);
      }
      return response.json();
    });
  }

  // --- the switch, on every page --------------------------------------------------------------

  var badge = document.getElementById("switch-badge");
  var shownChange = badge && badge.dataset.changedAt ? Date.parse(badge.dataset.changedAt) : 0;

  function badgeText(s) {
    if (s.source === "unconfigured") {
      return "no Redis";
    }
    if (s.source === "environment") {
      return "caching pinned off";
    }
    return s.enabled ? "caching on" : "caching off";
  }

  /* A switch state from a push or a poll; an older one than shown is ignored. */
  function applySwitch(s) {
    var changed = s.changed_at ? Date.parse(s.changed_at) : 0;
    if (changed < shownChange) {
      return;
    }
    shownChange = changed;
    if (badge) {
      badge.textContent = badgeText(s);
      badge.dataset.enabled = String(!!s.enabled);
      badge.dataset.source = s.source;
      badge.dataset.generation = String(s.generation);
      badge.dataset.changedAt = s.changed_at || "";
      badge.className = "switch-badge switch-badge--" + (s.enabled ? "on" : "off");
    }
    emit("switch", s);
  }

  function pollSwitch() {
    return fetchJSON(body.dataset.switchUrl).then(applySwitch);
  }

  on("switch.changed", applySwitch);
  on("resync", pollSwitch);
  on("connected", pollSwitch); // a flip between the page's render and the socket's opening
  whileDegraded(pollSwitch, SWITCH_POLL_MS);
  // Belt and braces while live: a push lost on its way (a publisher on another channel layer)
  // is made good within this long.
  every(pollSwitch, SWITCH_SAFETY_POLL_MS);

  window.addEventListener("online", function () {
    if (state === "degraded" && !socket) {
      retryMs = RETRY_MIN_MS;
      connect();
    }
  });

  // Dialogs opened by commandfor buttons where the browser does not do it natively.
  if (!("command" in HTMLButtonElement.prototype)) {
    document.addEventListener("click", function (event) {
      var button = event.target.closest("button[commandfor]");
      var dialog = button && document.getElementById(button.getAttribute("commandfor"));
      if (dialog && !dialog.open && !button.disabled) {
        dialog.showModal();
      }
    });
  }

  window.opsLive = {
    on: on,
    whileDegraded: whileDegraded,
    every: every,
    fetchJSON: fetchJSON,
    state: function () {
      return state;
    },
  };

  body.dataset.liveState = state;
  connect();
})();
