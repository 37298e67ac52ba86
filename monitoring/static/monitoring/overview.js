/* The overview page: health tiles, the switch block, the charts and the active alerts, kept
 * current by the websocket's events (see live.js) or, while degraded, by polling the monitoring
 * API. */
(function () {
  "use strict";

  var live = window.opsLive;
  var charts = window.opsCharts;
  if (!live || document.body.dataset.page !== "overview") {
    return;
  }

  var WINDOW_MS = 15 * 60 * 1000;
  var HEALTH_LIVE_MS = 15000;
  var HEALTH_DEGRADED_MS = 5000;
  var ALERTS_DEGRADED_MS = 5000;
  // Without a snapshot for this long (degraded, or no evaluator running), poll the figures.
  var POINT_STALE_MS = 6500;
  var POINT_CHECK_MS = 5000;

  function byTestId(id, root) {
    return (root || document).querySelector("[data-testid=\"" + id + "\"]");
  }

  function setText(id, text) {
    var el = byTestId(id);
    if (el) {
      el.textContent = text;
    }
  }

  function utc(iso) {
    return iso ? iso.replace("T", " ").slice(0, 19) + " UTC" : "";
  }

  function round(value, digits) {
    return Number(value).toFixed(digits);
  }

  function ms(value) {
    return (value < 10 ? round(value, 2) : round(value, 0)) + " ms";
  }

  function megabytes(bytes) {
    return round(bytes / 1048576, 1);
  }

  // --- health tiles ---------------------------------------------------------------------------

  var healthSection = document.getElementById("health");

  var DETAILS = {
    database: function (o) {
      return o.vendor + " · " + o.latency_ms + " ms";
    },
    redis: function (o) {
      if (!o.configured) {
        return "not configured";
      }
      if (!o.connected) {
        return "unreachable: " + (o.error || "no answer");
      }
      var text = "ping " + o.latency_ms + " ms";
      if (o.used_memory_bytes !== undefined && o.used_memory_bytes !== null) {
        text += " · " + megabytes(o.used_memory_bytes) + " MB";
        if (o.max_memory_bytes) {
          text += " of " + megabytes(o.max_memory_bytes) + " MB";
        }
      }
      return text;
    },
    switch: function (o) {
      return "caching " + (o.enabled ? "on" : "off") + " · " + o.source + " · generation " + o.generation;
    },
    breaker: function (o) {
      return o.state === "closed" ? "closed" : o.state + " · probe in " + o.seconds_until_probe + " s";
    },
    channel_layer: function (o) {
      var backend = o.backend || "none";
      return o.error ? backend + ": " + o.error : backend;
    },
    evaluator: function (o) {
      return o.enabled ? "held by " + o.holder : "turned off (REDIS_MONITORING_ENABLED=false)";
    },
  };

  function renderTile(name, check) {
    var tile = healthSection.querySelector("[data-check=\"" + name + "\"]");
    if (!tile) {
      return;
    }
    // An incident (Redis lost while caching is on) shows red, though the check says "warn".
    var status = check.incident ? "fail" : check.status;
    tile.dataset.status = status;
    tile.className = "tile tile--" + status;
    tile.querySelector(".tile__status").textContent = status;
    var detail = check.error || DETAILS[name](check.observed || {});
    tile.querySelector(".tile__detail").textContent = detail;
    if (name === "redis") {
      tile.dataset.connected = String(!!(check.observed || {}).connected);
    }
  }

  function renderHealth(doc) {
    Object.keys(doc.checks || {}).forEach(function (name) {
      renderTile(name, doc.checks[name]);
    });
    var word = byTestId("health-status");
    word.textContent = doc.status;
    word.className = "status-word status-word--" + doc.status;
    var redis = (doc.checks.redis || {}).observed || {};
    noteServer(redis.connected ? redis.latency_ms : null, redis.connected ? redis.used_memory_bytes : null);
  }

  function refreshHealth() {
    return live.fetchJSON(healthSection.dataset.healthUrl).then(renderHealth);
  }

  live.every(refreshHealth, function (state) {
    return state === "degraded" ? HEALTH_DEGRADED_MS : HEALTH_LIVE_MS;
  });
  live.on("breaker.changed", refreshHealth);
  live.on("alert.transition", refreshHealth);
  live.on("resync", refreshHealth);
  live.on("state", function (state) {
    if (state === "degraded") {
      refreshHealth().catch(function () {}); // the channel layer's tile should say so now
    }
  });

  // --- the switch block -----------------------------------------------------------------------

  var switchBlock = byTestId("switch-block");

  function closeDialog(id) {
    var dialog = document.getElementById(id);
    if (dialog && dialog.open) {
      dialog.close();
    }
  }

  function renderSwitch(s) {
    switchBlock.dataset.enabled = String(!!s.enabled);
    switchBlock.dataset.generation = String(s.generation);
    var pill = byTestId("switch-state");
    pill.textContent = s.enabled ? "ON" : "OFF";
    pill.className = "state-pill state-pill--" + (s.enabled ? "on" : "off");
    setText("switch-generation", String(s.generation));
    setText("switch-changed-by", s.changed_by || "nobody yet");
    var when = byTestId("switch-changed-at");
    when.setAttribute("datetime", s.changed_at || "");
    when.textContent = s.changed_at ? utc(s.changed_at) : "";
    setText("switch-reason", s.reason || "—");
    var off = byTestId("switch-off-button");
    var on = byTestId("switch-on-button");
    if (off && on) {
      off.hidden = !s.enabled;
      on.hidden = !!s.enabled;
    }
    // Someone else flipped it while this confirmation was open: it no longer applies.
    closeDialog(s.enabled ? "switch-on-dialog" : "switch-off-dialog");
    renderTile("switch", { status: "pass", observed: s });
  }

  live.on("switch", renderSwitch);

  // --- charts ---------------------------------------------------------------------------------

  var chartsSection = document.getElementById("charts");
  var groupsBox = document.getElementById("latency-groups");
  var points = [];
  var lastPointAt = 0;
  var server = { ping: null, memory: null, at: 0 };

  function percent(fraction) {
    return fraction === null || fraction === undefined ? null : fraction * 100;
  }

  var CHARTS = {
    "hit-rate": {
      max: 100,
      format: function (v) {
        return round(v, 1) + " %";
      },
      series: [{ name: "hit rate", value: function (p) { return percent(p.hit_rate); } }],
    },
    "request-rate": {
      format: function (v) {
        return round(v, 2) + " req/s";
      },
      series: [{ name: "requests", value: function (p) { return p.rps; } }],
    },
    latency: {
      format: ms,
      series: [
        { name: "p50", value: function (p) { return p.p50; } },
        { name: "p95", value: function (p) { return p.p95; } },
      ],
    },
    "error-rate": {
      format: function (v) {
        return round(v, 2) + " %";
      },
      series: [{ name: "errors", value: function (p) { return percent(p.error_rate); } }],
    },
    "redis-latency": {
      format: ms,
      series: [
        { name: "ping", value: function (p) { return p.redis_ping_ms; } },
        { name: "per call", value: function (p) { return p.redis_avg_ms; } },
      ],
    },
    "redis-memory": {
      format: function (v) {
        return round(v, 1) + " MB";
      },
      series: [
        {
          name: "used",
          value: function (p) {
            return p.memory === null || p.memory === undefined ? null : p.memory / 1048576;
          },
        },
      ],
    },
  };

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

  /* A live point from a minute's figures (a snapshot's, or the performance API's). */
  function fromMinute(t, overall, cache, routeGroups) {
    var fresh = Date.now() - server.at < POINT_STALE_MS * 2;
    return {
      t: t,
      hit_rate: cache.hit_rate,
      rps: overall.requests_per_second,
      error_rate: overall.error_rate,
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

  function seriesFor(def) {
    return def.series.map(function (s) {
      return {
        name: s.name,
        points: points.map(function (p) {
          return [p.t, s.value(p)];
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
    var id = "chart-latency-" + name.replace(/[^a-z0-9]+/gi, "-");
    var figure = document.getElementById(id);
    if (figure) {
      return figure;
    }
    figure = document.createElement("figure");
    figure.className = "chart";
    figure.id = id;
    figure.dataset.testid = id;
    figure.setAttribute("data-testid", id);
    figure.innerHTML =
      "<figcaption class=\"chart__caption\"><span class=\"chart__title\"></span>" +
      "<output class=\"chart__latest\" data-testid=\"" + id + "-latest\">—</output></figcaption>" +
      "<svg class=\"chart__svg\" viewBox=\"0 0 320 90\" preserveAspectRatio=\"none\" role=\"img\"></svg>" +
      "<details class=\"chart__data\"><summary>Values</summary>" +
      "<table class=\"chart__table\" data-testid=\"" + id + "-table\"></table></details>";
    figure.querySelector(".chart__title").textContent = name;
    groupsBox.appendChild(figure);
    return figure;
  }

  function drawGroups(from, to) {
    var names = groupNames();
    byTestId("latency-groups-empty").hidden = names.length > 0;
    names.forEach(function (name) {
      charts.render(groupFigure(name), {
        from: from,
        to: to,
        format: ms,
        series: ["p50", "p95"].map(function (which) {
          return {
            name: which,
            points: points.map(function (p) {
              var g = p.groups[name];
              return [p.t, g ? g[which] : null];
            }),
          };
        }),
      });
    });
  }

  function draw() {
    var to = Date.now();
    var from = to - WINDOW_MS;
    points = points.filter(function (p) {
      return p.t >= from;
    });
    Object.keys(CHARTS).forEach(function (id) {
      var def = CHARTS[id];
      charts.render(document.getElementById("chart-" + id), {
        from: from,
        to: to,
        max: def.max,
        format: def.format,
        series: seriesFor(def),
      });
    });
    drawGroups(from, to);
    var how = live.state() === "live" ? "live" : "polling";
    setText("charts-updated", "Updated " + new Date(to).toISOString().slice(11, 19) + " UTC (" + how + ").");
  }

  function loadHistory() {
    return live.fetchJSON(chartsSection.dataset.seriesUrl).then(function (doc) {
      var recent = points.filter(function (p) {
        return p.live;
      });
      points = doc.points.map(fromSeries).concat(recent);
      draw();
    });
  }

  live.on("monitoring.snapshot", function (snapshot) {
    var redis = snapshot.redis || {};
    // Not connected (or not sampled while caching is off): a gap, not the last good value.
    noteServer(redis.connected ? redis.latency_ms : null, redis.connected ? redis.used_memory_bytes : null);
    var tile = healthSection.querySelector("[data-check=\"redis\"]");
    if (redis.configured && tile && tile.dataset.connected !== String(!!redis.connected)) {
      refreshHealth().catch(function () {});
    }
    var minute = snapshot.minute || {};
    var point = fromMinute(Date.parse(snapshot.at), minute.overall || {}, minute.cache || {}, minute.route_groups);
    point.live = true;
    addPoint(point);
  });

  live.every(function () {
    if (Date.now() - lastPointAt < POINT_STALE_MS) {
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

  // --- active alerts --------------------------------------------------------------------------

  var alertsSection = document.getElementById("active-alerts-section");
  var alertList = document.getElementById("active-alerts");
  var rowTemplate = document.getElementById("alert-row-template");
  var alertBase = alertsSection.dataset.alertBase;

  function field(row, name) {
    return row.querySelector("[data-field=\"" + name + "\"]");
  }

  function newRow(alert) {
    var row = rowTemplate.content.firstElementChild.cloneNode(true);
    var id = String(alert.id);
    row.setAttribute("data-testid", "alert-" + id);
    row.dataset.alertId = id;
    field(row, "rule").href = alertBase + id + "/";
    field(row, "ack-form").action = alertBase + id + "/acknowledge";
    field(row, "ack-form").setAttribute("data-testid", "ack-form-" + id);
    field(row, "acknowledged").setAttribute("data-testid", "acknowledged-" + id);
    field(row, "ack-note").id = "ack-note-" + id;
    field(row, "ack-label").htmlFor = "ack-note-" + id;
    field(row, "ack-button").setAttribute("data-testid", "alert-ack-" + id);
    return row;
  }

  function fillRow(row, alert) {
    row.className = "alert-row alert-row--" + alert.severity;
    var severity = field(row, "severity");
    severity.textContent = alert.severity;
    severity.className = "severity severity--" + alert.severity;
    field(row, "rule").textContent = alert.rule;
    var state = field(row, "state");
    state.textContent = alert.state;
    state.className = "alert-state alert-state--" + alert.state;
    field(row, "summary").textContent = alert.summary;
    field(row, "value").textContent = alert.value === null ? "—" : String(Math.round(alert.value * 1000) / 1000);
    field(row, "threshold").textContent = String(alert.threshold);
    var started = field(row, "started_at");
    started.setAttribute("datetime", alert.started_at);
    started.textContent = utc(alert.started_at).replace(" UTC", "");
    field(row, "acknowledged").hidden = !alert.acknowledged;
    field(row, "acknowledged_by").textContent = alert.acknowledged ? alert.acknowledged.by : "";
    field(row, "ack-form").hidden = !!alert.acknowledged;
  }

  function renderAlerts(doc) {
    var existing = {};
    Array.prototype.forEach.call(alertList.children, function (row) {
      existing[row.dataset.alertId] = row;
    });
    var rows = doc.alerts.map(function (alert) {
      var row = existing[String(alert.id)] || newRow(alert);
      fillRow(row, alert);
      return row;
    });
    alertList.replaceChildren.apply(alertList, rows);
    setText("active-alert-count", String(rows.length));
    byTestId("no-active-alerts").hidden = rows.length > 0;
  }

  function refreshAlerts() {
    return live.fetchJSON(alertsSection.dataset.alertsUrl).then(renderAlerts);
  }

  live.on("alert.transition", refreshAlerts);
  live.on("resync", refreshAlerts);
  live.whileDegraded(refreshAlerts, ALERTS_DEGRADED_MS);

  loadHistory().catch(function () {
    setText("charts-updated", "History unavailable; drawing live points only.");
  });
})();
