/* The overview page: the health tiles, the switch panel and the active alerts are regions the
 * server renders (live.js fetches them again on the websocket's events); this script sets how
 * often they are polled, and draws the charts from the monitoring API's figures. */
(function () {
  "use strict";

  var live = window.opsLive;
  var charts = window.opsCharts;
  if (!live || document.body.dataset.page !== "overview") {
    return;
  }

  // The charts' ranges (the buttons' data-range): how far back, whether live points are drawn
  // on top of the history, and how often a history without them is fetched again.
  var RANGES = {
    "15m": { ms: 15 * 60 * 1000, live: true },
    "1h": { ms: 3600 * 1000, live: false },
    "24h": { ms: 86400 * 1000, live: false },
    "7d": { ms: 7 * 86400 * 1000, live: false },
    "30d": { ms: 30 * 86400 * 1000, live: false },
  };
  var HISTORY_REFRESH_MS = 60000;
  var HEALTH_LIVE_MS = 15000;
  var HEALTH_DEGRADED_MS = 5000;
  var ALERTS_DEGRADED_MS = 5000;
  // Without a snapshot for this long (degraded, or no evaluator running), poll the figures.
  var POINT_STALE_MS = 6500;
  var POINT_CHECK_MS = 5000;

  // --- the regions the server renders --------------------------------------------------------

  function refreshHealth() {
    return live.refresh("health");
  }

  function redisTile() {
    return document.querySelector("[data-fragment=\"health\"] [data-check=\"redis\"]");
  }

  /* Redis's ping and memory as the health check last saw them, for the charts' live points. */
  function noteHealth() {
    var tile = redisTile();
    if (!tile) {
      return;
    }
    var connected = tile.dataset.connected === "true";
    var number = function (text) {
      return text === undefined || text === "" ? null : Number(text);
    };
    noteServer(connected ? number(tile.dataset.latencyMs) : null, connected ? number(tile.dataset.usedMemoryBytes) : null);
  }

  live.every(refreshHealth, function (state) {
    return state === "degraded" ? HEALTH_DEGRADED_MS : HEALTH_LIVE_MS;
  });
  live.on("state", function (state) {
    if (state === "degraded") {
      refreshHealth(); // the channel layer's tile should say so now
    }
  });
  live.on("swapped", function (name) {
    if (name === "health") {
      noteHealth();
    } else if (name === "switch") {
      refreshHealth(); // the switch's tile too, also when the change came by polling
    }
  });
  live.whileDegraded(function () {
    return live.refresh("alerts");
  }, ALERTS_DEGRADED_MS);

  // --- charts ---------------------------------------------------------------------------------

  var chartsSection = document.getElementById("charts");
  var groupsBox = document.getElementById("latency-groups");
  var points = [];
  var lastPointAt = 0;
  var historyMissing = false;
  var server = { ping: null, memory: null, at: 0 };
  var range = "15m";
  var notTraffic = (chartsSection.dataset.notTraffic || "").split("|");

  function percent(fraction) {
    return fraction === null || fraction === undefined ? null : fraction * 100;
  }

  function msDigits(value) {
    return value < 10 ? 2 : 0;
  }

  /* Each chart's figures, one per series; the series' names and the unit are the figure's
   * (data-series-names, data-unit: the template's). */
  var CHARTS = {
    "hit-rate": { max: 100, digits: 1, values: [function (p) { return percent(p.hit_rate); }] },
    "request-rate": { digits: 2, values: [function (p) { return p.rps; }] },
    latency: {
      digits: msDigits,
      values: [function (p) { return p.p50; }, function (p) { return p.p95; }],
    },
    "error-rate": { digits: 2, values: [function (p) { return percent(p.error_rate); }] },
    "redis-latency": {
      digits: msDigits,
      values: [function (p) { return p.redis_ping_ms; }, function (p) { return p.redis_avg_ms; }],
    },
    "redis-memory": {
      digits: 1,
      values: [
        function (p) {
          return p.memory === null || p.memory === undefined ? null : p.memory / 1048576;
        },
      ],
    },
  };
  var GROUP_CHART = { digits: msDigits, keys: ["p50", "p95"] };

  function formatter(figure, digits) {
    var unit = figure.dataset.unit;
    return function (value) {
      var places = typeof digits === "function" ? digits(value) : digits;
      return Number(value).toFixed(places) + " " + unit;
    };
  }

  function seriesNames(figure) {
    return figure.dataset.seriesNames.split("|");
  }

  function groupsOf(source, pick) {
    var groups = {};
    Object.keys(source || {}).forEach(function (name) {
      groups[name] = pick(source[name]);
    });
    return groups;
  }

  function fromSeries(p) {
    return {
      t: Date.parse(p.t),
      hit_rate: p.hit_rate,
      rps: p.requests_per_second,
      error_rate: p.error_rate,
      p50: p.p50_ms,
      p95: p.p95_ms,
      redis_avg_ms: p.redis_avg_ms,
      redis_ping_ms: p.redis_ping_ms,
      memory: p.redis_memory_bytes,
      groups: groupsOf(p.route_groups, function (g) {
        return { p50: g.p50_ms, p95: g.p95_ms };
      }),
    };
  }

  /* The error rate the rules judge: of the route groups that are traffic (the monitoring's
   * own probes are not). */
  function trafficErrorRate(routeGroups) {
    var requests = 0;
    var errors = 0;
    Object.keys(routeGroups || {}).forEach(function (name) {
      if (notTraffic.indexOf(name) === -1) {
        requests += routeGroups[name].requests || 0;
        errors += routeGroups[name].errors || 0;
      }
    });
    return requests ? errors / requests : null;
  }

  /* A live point from a minute's figures (a snapshot's, or the performance API's). */
  function fromMinute(t, overall, cache, routeGroups) {
    var fresh = Date.now() - server.at < POINT_STALE_MS * 2;
    return {
      t: t,
      hit_rate: cache.hit_rate,
      rps: overall.requests_per_second,
      error_rate: trafficErrorRate(routeGroups),
      p50: overall.p50_ms,
      p95: overall.p95_ms,
      redis_avg_ms: cache.redis_avg_ms,
      redis_ping_ms: fresh ? server.ping : null,
      memory: fresh ? server.memory : null,
      groups: groupsOf(routeGroups, function (g) {
        return { p50: g.p50_ms, p95: g.p95_ms };
      }),
    };
  }

  function noteServer(ping, memory) {
    server = { ping: ping, memory: memory === undefined ? null : memory, at: Date.now() };
  }

  function addPoint(point) {
    points.push(point);
    points.sort(function (a, b) {
      return a.t - b.t;
    });
    lastPointAt = Date.now();
    draw();
  }

  function seriesFor(figure, def) {
    var names = seriesNames(figure);
    return def.values.map(function (value, i) {
      return {
        name: names[i],
        points: points.map(function (p) {
          return [p.t, value(p)];
        }),
      };
    });
  }

  function groupNames() {
    var names = {};
    points.forEach(function (p) {
      Object.keys(p.groups).forEach(function (name) {
        if (p.groups[name].p95 !== null && p.groups[name].p95 !== undefined) {
          names[name] = true;
        }
      });
    });
    return Object.keys(names).sort();
  }

  function groupFigure(name) {
    return groupsBox.querySelector("[data-route-group=\"" + name + "\"]");
  }

  function drawGroups(from, to) {
    var drawn = groupNames().filter(groupFigure);
    groupsBox.querySelector("[data-latency-groups-empty]").hidden = drawn.length > 0;
    drawn.forEach(function (name) {
      var figure = groupFigure(name);
      var names = seriesNames(figure);
      figure.hidden = false;
      charts.render(figure, {
        from: from,
        to: to,
        span: rangeButton(range).dataset.span,
        format: formatter(figure, GROUP_CHART.digits),
        series: GROUP_CHART.keys.map(function (which, i) {
          return {
            name: names[i],
            points: points.map(function (p) {
              var g = p.groups[name];
              return [p.t, g ? g[which] : null];
            }),
          };
        }),
      });
    });
  }

  /* Which of the template's notes under the charts shows; `at` fills its time. */
  function showNote(which, at) {
    chartsSection.querySelectorAll("[data-charts-note]").forEach(function (note) {
      note.hidden = note.dataset.chartsNote !== which;
      var time = note.querySelector("time");
      if (time && at !== undefined && !note.hidden) {
        time.setAttribute("datetime", new Date(at).toISOString());
        time.textContent = new Date(at).toISOString().slice(11, 19);
      }
    });
  }

  // Switch flips, incidents and deploys of the charts' window, from the series' answer.
  var marks = [];

  function draw() {
    var to = Date.now();
    var from = to - RANGES[range].ms;
    points = points.filter(function (p) {
      return p.t >= from;
    });
    Object.keys(CHARTS).forEach(function (id) {
      var def = CHARTS[id];
      var figure = document.getElementById("chart-" + id);
      charts.render(figure, {
        from: from,
        to: to,
        span: rangeButton(range).dataset.span,
        max: def.max,
        format: formatter(figure, def.digits),
        series: seriesFor(figure, def),
        marks: marks,
      });
    });
    drawGroups(from, to);
    if (!historyMissing) {
      showNote(live.state() === "live" ? "live" : "polling", to);
    }
  }

  function rangeButton(name) {
    return chartsSection.querySelector("[data-range=\"" + name + "\"]");
  }

  function loadHistory() {
    var shown = range;
    return live.fetchJSON(rangeButton(shown).dataset.seriesUrl).then(function (doc) {
      if (shown !== range) {
        return; // another range was chosen meanwhile
      }
      var recent = points.filter(function (p) {
        return p.live && RANGES[range].live;
      });
      points = doc.points.map(fromSeries).concat(recent);
      marks = (doc.marks || []).map(function (m) {
        return { at: Date.parse(m.at), until: m.until ? Date.parse(m.until) : null, kind: m.kind, label: m.label };
      });
      historyMissing = false;
      draw();
    });
  }

  /* Show another range: its heading, its note, its button pressed, its history. */
  function choose(name) {
    range = name;
    var button = rangeButton(name);
    chartsSection.querySelectorAll("[data-range]").forEach(function (other) {
      other.setAttribute("aria-pressed", String(other === button));
    });
    document.getElementById("charts-heading").textContent = button.dataset.heading;
    chartsSection.querySelector("[data-range-description]").textContent = button.dataset.description;
    groupsBox.querySelector("[data-latency-groups-empty]").textContent =
      "No requests in the " + button.dataset.heading.toLowerCase() + ".";
    points = [];
    showNote("loading");
    loadHistory().catch(function () {
      historyMissing = true;
      showNote("no-history");
    });
  }

  chartsSection.querySelectorAll("[data-range]").forEach(function (button) {
    button.addEventListener("click", function () {
      choose(button.dataset.range);
    });
  });
  live.every(function () {
    return RANGES[range].live ? null : loadHistory();
  }, HISTORY_REFRESH_MS);

  live.on("monitoring.snapshot", function (snapshot) {
    var redis = snapshot.redis || {};
    // Not connected (or not sampled while caching is off): a gap, not the last good value.
    noteServer(redis.connected ? redis.latency_ms : null, redis.connected ? redis.used_memory_bytes : null);
    var tile = redisTile();
    // Redis is sampled only while caching is on; without a sample there is nothing to compare.
    var sampled = redis.configured && redis.connected !== undefined;
    if (sampled && tile && tile.dataset.connected !== String(!!redis.connected)) {
      refreshHealth();
    }
    var minute = snapshot.minute || {};
    if (!RANGES[range].live) {
      return;
    }
    var point = fromMinute(Date.parse(snapshot.at), minute.overall || {}, minute.cache || {}, minute.route_groups);
    point.live = true;
    addPoint(point);
  });

  live.every(function () {
    if (!RANGES[range].live || Date.now() - lastPointAt < POINT_STALE_MS) {
      return null;
    }
    return live.fetchJSON(chartsSection.dataset.performanceUrl).then(function (doc) {
      var point = fromMinute(Date.now(), doc.overall || {}, doc.cache || {}, doc.route_groups);
      point.live = true;
      addPoint(point);
    });
  }, POINT_CHECK_MS);
  live.on("resync", loadHistory);
  live.on("state", draw);

  noteHealth();
  loadHistory().catch(function () {
    historyMissing = true;
    showNote("no-history");
  });
})();
