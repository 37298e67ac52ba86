/* Live updates for every dashboard page.
 *
 * One websocket to /ws/monitoring/ carries the dashboard group's events ({event, payload}).
 * An event names what changed; the regions of the page it affects (marked data-fragment, with
 * their data-fragment-url) are fetched again, rendered by the server, and swapped in. A burst of
 * events costs one fetch per region, and one region's answers are applied in the order they
 * were asked for (a fetch asked for while another is in flight starts after it).
 *
 * If the socket cannot connect, drops, or stops answering pings (the ping is answered through
 * the channel layer, so a dead layer is noticed too), the page shows the "live updates degraded"
 * banner, runs the pollers the page registered, and reconnects with backoff; once the socket
 * is back the banner goes and the page fetches every region once.
 *
 * window.opsLive:
 *   on(event, fn)             websocket events ("switch.changed", ...), plus "state",
 *                             "connected" (first connection), "resync" (live again after
 *                             degraded) and "swapped" (a region's name, after it changed)
 *   refresh(name)             fetch region `name` again and swap it in (a promise)
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
  // Events within this long of each other cost one fetch per region.
  var COALESCE_MS = 30;
  // The regions each event changes (a region this page does not have is skipped).
  var REFRESHES = {
    "switch.changed": ["switch-badge", "rollback-banner", "switch", "health"],
    "breaker.changed": ["health"],
    "alert.transition": ["alerts", "health"],
  };

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
      statusEl.textContent = statusEl.getAttribute("data-label-" + next);
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

  // --- server-rendered regions ------------------------------------------------------------

  var regions = {};

  function regionNamed(name) {
    return document.querySelector("[data-fragment=\"" + name + "\"]");
  }

  /* Fetch region `name` again; resolves once an answer asked for after this call is shown. */
  function refresh(name) {
    var region = regions[name] || (regions[name] = { waiting: [], timer: null, busy: false });
    return new Promise(function (resolve) {
      region.waiting.push(resolve);
      if (!region.timer && !region.busy) {
        region.timer = setTimeout(load, COALESCE_MS, name, region);
      }
    });
  }

  function load(name, region) {
    region.timer = null;
    var waiting = region.waiting;
    region.waiting = [];
    var shown = regionNamed(name);
    if (!shown) {
      waiting.forEach(function (resolve) {
        resolve();
      });
      return;
    }
    region.busy = true;
    fetch(shown.dataset.fragmentUrl, {
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error", // signed out: the login page is not this region
      headers: { Accept: "text/html" },
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(name + " answered " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        swap(name, html);
      })
      .catch(function (err) {
        console.warn("opsdash: region " + name + " not refreshed", err);
      })
      .then(function () {
        region.busy = false;
        waiting.forEach(function (resolve) {
          resolve();
        });
        if (region.waiting.length) {
          region.timer = setTimeout(load, COALESCE_MS, name, region);
        }
      });
  }

  /* The region as the server would render it now, leaving out what differs between two
   * renders of the same state (the masked CSRF token) or is the reader's (an open dialog). */
  function comparable(element) {
    var copy = element.cloneNode(true);
    copy.querySelectorAll("input[name=csrfmiddlewaretoken]").forEach(function (input) {
      input.removeAttribute("value");
    });
    copy.querySelectorAll("dialog[open]").forEach(function (dialog) {
      dialog.removeAttribute("open");
    });
    return copy.outerHTML;
  }

  function swap(name, html) {
    var shown = regionNamed(name);
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var next = holder.content.firstElementChild;
    if (!shown || !next || next.dataset.fragment !== name || comparable(shown) === comparable(next)) {
      return;
    }
    keepWhatTheReaderTyped(shown, next);
    var focused = shown.contains(document.activeElement) ? document.activeElement.id : "";
    shown.replaceWith(next);
    var refocus = focused && document.getElementById(focused);
    if (refocus) {
      refocus.focus();
    }
    emit("swapped", name);
  }

  function keepWhatTheReaderTyped(shown, next) {
    shown.querySelectorAll("input[id], textarea[id]").forEach(function (field) {
      var same = next.querySelector("#" + CSS.escape(field.id));
      if (same && field.type !== "hidden" && field.value !== field.defaultValue) {
        same.value = field.value;
      }
    });
  }

  function refreshAll() {
    var names = Array.prototype.map.call(document.querySelectorAll("[data-fragment]"), function (el) {
      return el.dataset.fragment;
    });
    return Promise.all(names.map(refresh));
  }

  function refreshSwitch() {
    return Promise.all([refresh("switch-badge"), refresh("rollback-banner"), refresh("switch")]);
  }

  Object.keys(REFRESHES).forEach(function (event) {
    on(event, function () {
      REFRESHES[event].forEach(refresh);
    });
  });
  on("resync", refreshAll);
  on("connected", refreshSwitch); // a flip between the page's render and the socket's opening
  whileDegraded(refreshSwitch, SWITCH_POLL_MS);
  // Belt and braces while live: a push lost on its way (a publisher on another channel layer)
  // is made good within this long.
  every(refreshSwitch, SWITCH_SAFETY_POLL_MS);

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
    refresh: refresh,
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
