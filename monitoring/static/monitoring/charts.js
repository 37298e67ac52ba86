/* Small SVG line charts, drawn by hand (no library, no CDN). Every chart also writes its latest
 * value as text, describes itself in its aria-label, and keeps a small table of recent values.
 *
 * window.opsCharts.render(figure, spec):
 *   figure  a <figure> holding an <svg>, an <output> and a <table> (see overview.html)
 *   spec    {from, to: ms timestamps; series: [{name, points: [[t, value|null], ...]}];
 *            format: value -> text; max: optional fixed top of the scale;
 *            span: optional words for the range, "15 minutes" if not given}
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var WIDTH = 320;
  var HEIGHT = 90;
  var PAD = 4;
  var TABLE_ROWS = 8;

  function escape(text) {
    var span = document.createElement("span");
    span.textContent = String(text);
    return span.innerHTML;
  }

  /* The newest point, if it has a value: a gap now (no lookups, Redis unreachable) reads "—",
     not the last value seen before it. */
  function latest(points) {
    var last = points[points.length - 1];
    return last && last[1] !== null && last[1] !== undefined ? last : null;
  }

  function values(series) {
    var all = [];
    series.forEach(function (s) {
      s.points.forEach(function (p) {
        if (p[1] !== null && p[1] !== undefined) {
          all.push(p[1]);
        }
      });
    });
    return all;
  }

  function scaleTop(spec, all) {
    if (spec.max) {
      return spec.max;
    }
    var top = all.length ? Math.max.apply(null, all) : 0;
    return top > 0 ? top * 1.15 : 1;
  }

  /* An SVG path through the points (a missing value breaks the line), and where it ends. */
  function path(points, spec, top) {
    var span = Math.max(1, spec.to - spec.from);
    var d = "";
    var pen = "M";
    var end = null;
    points.forEach(function (p) {
      if (p[1] === null || p[1] === undefined || p[0] < spec.from) {
        pen = "M";
        return;
      }
      var x = ((p[0] - spec.from) / span) * WIDTH;
      var y = HEIGHT - PAD - (Math.min(p[1], top) / top) * (HEIGHT - 2 * PAD);
      end = x.toFixed(1) + " " + y.toFixed(1);
      d += pen + end + " ";
      pen = "L";
    });
    return { d: d.trim(), end: end };
  }

  /* Switch flips and deploys as thin vertical lines, incidents as a band, each titled. */
  function drawMarks(svg, spec) {
    var span = Math.max(1, spec.to - spec.from);
    (spec.marks || []).forEach(function (m) {
      var end = m.kind === "incident" ? (m.until || spec.to) : m.at;
      if (end < spec.from || m.at > spec.to) {
        return;
      }
      var x1 = (Math.max(m.at, spec.from) - spec.from) / span * WIDTH;
      var x2 = (Math.min(end, spec.to) - spec.from) / span * WIDTH;
      var shape = document.createElementNS(SVG, "rect");
      shape.setAttribute("x", x1.toFixed(1));
      shape.setAttribute("y", "0");
      shape.setAttribute("width", Math.max(1.5, x2 - x1).toFixed(1));
      shape.setAttribute("height", String(HEIGHT));
      shape.setAttribute("class", "mark mark--" + m.kind);
      var title = document.createElementNS(SVG, "title");
      title.textContent = m.label;
      shape.appendChild(title);
      svg.appendChild(shape);
    });
  }

  function drawSvg(svg, spec, top) {
    while (svg.firstChild) {
      svg.removeChild(svg.firstChild);
    }
    [0.5, 1].forEach(function (fraction) {
      var grid = document.createElementNS(SVG, "line");
      var y = HEIGHT - PAD - fraction * (HEIGHT - 2 * PAD);
      grid.setAttribute("x1", "0");
      grid.setAttribute("x2", String(WIDTH));
      grid.setAttribute("y1", y.toFixed(1));
      grid.setAttribute("y2", y.toFixed(1));
      grid.setAttribute("class", "grid");
      svg.appendChild(grid);
    });
    drawMarks(svg, spec);
    spec.series.forEach(function (s, i) {
      var drawn = path(s.points, spec, top);
      if (!drawn.end) {
        return;
      }
      var line = document.createElementNS(SVG, "path");
      line.setAttribute("d", drawn.d);
      line.setAttribute("class", "line" + (i ? " line--" + (i + 1) : ""));
      svg.appendChild(line);
      // The latest value as a dot, so that a lone point (a gap either side) shows too.
      var dot = document.createElementNS(SVG, "path");
      dot.setAttribute("d", "M" + drawn.end + " h0");
      dot.setAttribute("class", "dot" + (i ? " dot--" + (i + 1) : ""));
      svg.appendChild(dot);
    });
  }

  function latestText(spec) {
    var parts = spec.series.map(function (s) {
      var last = latest(s.points);
      var text = last ? spec.format(last[1]) : "—";
      return spec.series.length > 1 ? s.name + " " + text : text;
    });
    return parts.join(" · ");
  }

  function span(spec) {
    return spec.span || "15 minutes";
  }

  function describe(figure, spec, all) {
    var title = figure.querySelector(".chart__title");
    var name = title ? title.textContent : "chart";
    if (!all.length) {
      return name + ": no data in the last " + span(spec);
    }
    return (
      name + ": latest " + latestText(spec) + "; over the last " + span(spec) + ", lowest " +
      spec.format(Math.min.apply(null, all)) + ", highest " + spec.format(Math.max.apply(null, all))
    );
  }

  function ensureAxis(figure) {
    var axis = figure.querySelector(".chart__axis");
    if (!axis) {
      axis = document.createElement("div");
      axis.className = "chart__axis";
      axis.setAttribute("aria-hidden", "true");
      axis.innerHTML = "<span class=\"chart__from\"></span><span class=\"chart__top\"></span><span>now</span>";
      figure.querySelector("svg").after(axis);
    }
    return axis;
  }

  function ensureLegend(figure, spec) {
    if (spec.series.length < 2 || figure.querySelector(".chart__legend")) {
      return;
    }
    var legend = document.createElement("div");
    legend.className = "chart__legend";
    legend.setAttribute("aria-hidden", "true");
    legend.innerHTML = spec.series
      .map(function (s, i) {
        return "<span class=\"key" + (i ? " key--" + (i + 1) : "") + "\"></span>" + escape(s.name);
      })
      .join(" &nbsp; ");
    ensureAxis(figure).after(legend);
  }

  /* A point's time: the clock, with the date once the chart spans more than a day. */
  function clock(t, spec) {
    var iso = new Date(t).toISOString();
    return spec.to - spec.from > 86400000 ? iso.slice(5, 10) + " " + iso.slice(11, 16) : iso.slice(11, 19);
  }

  function fillTable(table, spec) {
    var times = spec.series[0].points.slice(-TABLE_ROWS).map(function (p) {
      return p[0];
    });
    var head = "<thead><tr><th scope=\"col\">time (UTC)</th>" + spec.series.map(function (s) {
      return "<th scope=\"col\">" + escape(s.name) + "</th>";
    }).join("") + "</tr></thead>";
    var rows = times.reverse().map(function (t) {
      var cells = spec.series.map(function (s) {
        var found = s.points.find(function (p) {
          return p[0] === t;
        });
        var value = found && found[1] !== null && found[1] !== undefined ? spec.format(found[1]) : "—";
        return "<td>" + value + "</td>";
      });
      return "<tr><th scope=\"row\">" + clock(t, spec) + "</th>" + cells.join("") + "</tr>";
    });
    table.innerHTML = head + "<tbody>" + rows.join("") + "</tbody>";
  }

  function render(figure, spec) {
    var svg = figure.querySelector("svg");
    var all = values(spec.series);
    var top = scaleTop(spec, all);
    drawSvg(svg, spec, top);
    svg.setAttribute("aria-label", describe(figure, spec, all));
    figure.querySelector("output").textContent = latestText(spec);
    var axis = ensureAxis(figure);
    axis.querySelector(".chart__from").textContent = span(spec) + " ago";
    axis.querySelector(".chart__top").textContent = "top " + spec.format(top);
    ensureLegend(figure, spec);
    fillTable(figure.querySelector("table"), spec);
  }

  window.opsCharts = { render: render };
})();
