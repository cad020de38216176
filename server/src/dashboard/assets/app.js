// fedcsg dashboard: polls the coordinator's JSON API and renders jobs, rounds, workers and
// three small SVG charts. Plain ES2020, no dependencies; every string from the API goes into
// the DOM through textContent or setAttribute, never through innerHTML.
"use strict";

(() => {
  const POLL_MS = 1000;
  const FETCH_TIMEOUT_MS = 10000;
  const LAST_ROUNDS = 200;
  const TOKEN_KEY = "fedcsg.adminToken";
  const SELECTED_KEY = "fedcsg.selectedJob";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const DASH = "\u2014";
  const COLORS = { blue: "#2563eb", orange: "#ea580c", green: "#16a34a", grey: "#6b7280" };

  const $ = (selector) => document.querySelector(selector);

  // sessionStorage can be unavailable (privacy settings); the page then just forgets.
  const storage = {
    get(key) { try { return sessionStorage.getItem(key) || ""; } catch (_) { return ""; } },
    set(key, value) {
      try { if (value) sessionStorage.setItem(key, value); else sessionStorage.removeItem(key); } catch (_) { /* ignore */ }
    },
  };

  const state = {
    token: storage.get(TOKEN_KEY),
    selected: storage.get(SELECTED_KEY) || null,
    needToken: false, // the form is shown; polling waits for a token
    inFlight: false,
    again: false,     // a refresh was asked for while one was in flight
    chartKey: null,   // what the charts show now, to skip identical redraws
  };

  // ---------------------------------------------------------------- formatting

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const pct = (v) => (isNum(v) ? (v * 100).toFixed(1) + "%" : DASH);
  const fixed = (v, digits) => (isNum(v) ? v.toFixed(digits) : DASH);
  const int = (v) => (isNum(v) ? v.toLocaleString("en-US") : DASH);
  const short = (v) => (isNum(v) ? String(Number(v.toPrecision(3))) : DASH);
  const pad2 = (n) => String(n).padStart(2, "0");
  const clock = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  const BYTE_UNITS = ["B", "kB", "MB", "GB", "TB"];

  function byteUnit(max) {
    let i = 0;
    while (i < BYTE_UNITS.length - 1 && max >= 1000 ** (i + 1)) i++;
    return i;
  }

  function bytes(v) {
    if (!isNum(v)) return DASH;
    const i = byteUnit(Math.abs(v));
    const x = v / 1000 ** i;
    return (i === 0 ? String(x) : x.toFixed(x < 10 ? 2 : x < 100 ? 1 : 0)) + " " + BYTE_UNITS[i];
  }

  // "resnet20 · CSG 12-72"; the API spells full filters "none" (or null).
  const modelText = (j) => (j.model || "?") + (j.csg && j.csg !== "none" ? ` \u00b7 CSG ${j.csg}` : "");

  // A CSS class name made from a state word that came from the API.
  const stateClass = (s) => "state state-" + String(s).toLowerCase().replace(/[^a-z0-9_-]/g, "");

  // ---------------------------------------------------------------- API

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    let response;
    let body = null;
    try {
      response = await fetch(path, { headers, cache: "no-store", signal: abort.signal });
      try { body = await response.json(); } catch (_) { body = null; }
    } catch (err) {
      const why = err.name === "AbortError" ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : err.message;
      throw new Error("cannot reach the coordinator: " + why);
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok) {
      const why = body && typeof body.error === "string" ? body.error : response.statusText;
      throw new HttpError(response.status, why || "HTTP " + response.status);
    }
    if (body === null || typeof body !== "object") throw new Error("the coordinator's answer is not JSON");
    return body;
  }

  // ---------------------------------------------------------------- polling

  async function tick() {
    if (state.needToken) return;
    if (state.inFlight) { state.again = true; return; }
    state.inFlight = true;
    try {
      const overview = await api("api/overview");
      showContent();
      renderOverview(overview);
      const id = state.selected;
      if (id !== null) {
        const detail = await api(`api/jobs/${encodeURIComponent(id)}?last_rounds=${LAST_ROUNDS}`);
        if (state.selected === id) renderDetail(detail); // else the user clicked meanwhile
      }
      setStatus("updated " + clock(new Date()), false);
    } catch (err) {
      if (err instanceof HttpError && err.status === 401) askForToken(err.message);
      else if (err instanceof HttpError) setStatus(`the coordinator answered ${err.status}: ${err.message}`, true);
      else setStatus(err.message, true);
    } finally {
      state.inFlight = false;
    }
    if (state.again) { state.again = false; tick(); }
  }

  // A periodic tick is skipped while one is in flight; an explicit refresh runs right after it.
  function periodic() { if (!state.inFlight) tick(); }

  function setStatus(text, isError) {
    const el = $("#status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  // ---------------------------------------------------------------- token

  function setToken(token) {
    state.token = token;
    storage.set(TOKEN_KEY, token);
    $("#token-clear").hidden = !token;
  }

  function askForToken(serverMessage) {
    const refused = state.token !== "";
    setToken("");
    state.needToken = true;
    $("#content").hidden = true;
    clearData();
    let text = "This coordinator requires its admin token. Enter it to see its jobs and workers.";
    if (refused) text += ` The token was refused: ${serverMessage}`;
    $("#auth-message").textContent = text;
    $("#auth-message").classList.toggle("error", refused);
    $("#token").value = "";
    $("#token-submit").disabled = false;
    $("#token-form").hidden = false;
    $("#token").focus();
    setStatus(refused ? "admin token refused" : "admin token required", true);
  }

  function showContent() {
    state.needToken = false;
    $("#token-form").hidden = true;
    $("#content").hidden = false;
  }

  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    if (!token) return;
    setToken(token);
    state.needToken = false;
    $("#auth-message").textContent = "Checking the token\u2026";
    $("#auth-message").classList.remove("error");
    $("#token-submit").disabled = true;
    tick();
  });

  $("#token-clear").addEventListener("click", () => { setToken(""); tick(); });

  // ---------------------------------------------------------------- tables

  // Updates a tbody in place: one row per item, keyed, so rows keep their identity (and
  // hover, selection and focus) across refreshes. A cell is a string or [text, className].
  function syncRows(tbody, items, key, cells, rowClass, decorate) {
    const old = new Map();
    for (const tr of tbody.rows) old.set(tr.dataset.key, tr);
    items.forEach((item, i) => {
      const k = String(key(item));
      let tr = old.get(k);
      if (tr) old.delete(k);
      else { tr = document.createElement("tr"); tr.className = rowClass; tr.dataset.key = k; }
      cells(item).forEach((cell, j) => {
        const [text, cls] = Array.isArray(cell) ? cell : [cell, ""];
        const td = tr.cells[j] || tr.insertCell();
        if (td.textContent !== text) td.textContent = text;
        if (td.className !== cls) td.className = cls;
      });
      if (decorate) decorate(tr, item);
      if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] || null);
    });
    for (const tr of old.values()) tr.remove();
  }

  function clearData() {
    for (const id of ["#jobs", "#workers", "#rounds"]) $(id + " tbody").replaceChildren();
    for (const id of ["#chart-accuracy", "#chart-loss", "#chart-bytes"]) $(id).replaceChildren();
    state.chartKey = null;
  }

  function defaultJob(jobs) {
    for (let i = jobs.length - 1; i >= 0; i--) if (jobs[i].state === "running") return jobs[i].id;
    return jobs.length ? jobs[jobs.length - 1].id : null;
  }

  function renderOverview(overview) {
    const c = overview.coordinator || {};
    $("#coordinator").textContent = `coordinator ${c.version || "?"}${c.shutting_down ? " \u00b7 shutting down" : ""}`;
    $("#token-clear").hidden = !state.token;
    const jobs = Array.isArray(overview.jobs) ? overview.jobs : [];
    const workers = Array.isArray(overview.workers) ? overview.workers : [];
    if (!jobs.some((j) => j.id === state.selected)) selectJob(defaultJob(jobs));

    syncRows($("#jobs tbody"), jobs, (j) => j.id, (j) => [
      j.id,
      j.name || "",
      [j.state, stateClass(j.state)],
      [`${int(j.rounds_completed)}/${int(j.rounds_total)}`, "num"],
      [modelText(j), "nowrap"],
      [pct(j.latest_test_accuracy), "num"],
    ], "job-row", (tr, j) => {
      tr.dataset.jobId = j.id;
      tr.tabIndex = 0;
      tr.classList.toggle("selected", j.id === state.selected);
    });
    $("#jobs-empty").hidden = jobs.length > 0;

    syncRows($("#workers tbody"), workers, (w) => w.id, (w) => [
      w.name || "",
      [w.id, "mono"],
      [w.state, stateClass(w.state)],
      [int(w.num_samples), "num"],
      [isNum(w.seconds_since_heartbeat) ? w.seconds_since_heartbeat.toFixed(1) + " s ago" : DASH, "num"],
      [int(w.rounds_contributed), "num"],
    ], "worker-row");
    $("#workers-empty").hidden = workers.length > 0;
  }

  function selectJob(id) {
    if (id === state.selected) return;
    state.selected = id;
    storage.set(SELECTED_KEY, id);
    for (const tr of document.querySelectorAll("#jobs tr.job-row")) {
      tr.classList.toggle("selected", tr.dataset.jobId === id);
    }
    renderDetail(null);
  }

  function onRowPick(event) {
    if (event.type === "keydown" && event.key !== "Enter" && event.key !== " ") return;
    const tr = event.target.closest("tr.job-row");
    if (!tr) return;
    event.preventDefault();
    selectJob(tr.dataset.jobId);
    tick();
  }
  $("#jobs tbody").addEventListener("click", onRowPick);
  $("#jobs tbody").addEventListener("keydown", onRowPick);

  // ---------------------------------------------------------------- job detail

  function renderDetail(detail) {
    const job = detail && detail.job;
    const rounds = detail && Array.isArray(detail.rounds) ? detail.rounds : [];
    const title = $("#job-title");
    if (!job) {
      title.textContent = state.selected === null ? "No job selected" : `${state.selected} \u2026`;
      $("#job-message").textContent = "";
      $("#job-summary").textContent = "";
    } else {
      const badge = document.createElement("span");
      badge.className = stateClass(job.state);
      badge.textContent = job.state;
      title.replaceChildren(`${job.id} \u00b7 ${job.name || "(unnamed)"} `, badge);
      $("#job-message").textContent = job.message || "";
      const parts = [`round ${int(job.rounds_completed)} of ${int(job.rounds_total)}`,
        modelText(job), job.strategy];
      if (isNum(job.exchanged_values) && isNum(job.full_filter_exchanged_values) && job.full_filter_exchanged_values > 0) {
        const share = (100 * job.exchanged_values / job.full_filter_exchanged_values).toFixed(1);
        parts.push(`exchanges ${int(job.exchanged_values)} of ${int(job.full_filter_exchanged_values)} values (${share}% of full filters)`);
      }
      $("#job-summary").textContent = parts.filter(Boolean).join(" \u00b7 ");
    }

    syncRows($("#rounds tbody"), rounds.slice().reverse(), (r) => r.round, (r) => [
      [String(r.round), "num"],
      [`${Array.isArray(r.participants) ? r.participants.length : DASH}/${int(r.sampled)}`, "num"],
      [fixed(r.train_loss, 4), "num"],
      [pct(r.test_accuracy), "num"],
      [bytes(r.bytes_up), "num"],
      [bytes(r.bytes_down), "num"],
      [bytes(r.full_filter_f32_bytes_up), "num"],
      [fixed(r.seconds, 2), "num"],
      [fixed(r.aggregation_seconds, 3), "num"],
      [short(r.learning_rate), "num"],
    ], "round-row", (tr, r) => {
      tr.title = Array.isArray(r.participants) ? "participants: " + r.participants.join(", ") : "";
    });
    $("#rounds-empty").hidden = rounds.length > 0;
    renderCharts(job ? job.id : null, rounds);
  }

  function renderCharts(jobId, rounds) {
    const key = JSON.stringify([jobId, rounds]);
    if (key === state.chartKey) return; // unchanged: keep the SVG (and any open tooltip)
    state.chartKey = key;
    const series = (name, field, color, extra) =>
      ({ name, color, ...extra, points: rounds.map((r) => ({ x: r.round, y: r[field] })).filter((p) => isNum(p.x) && isNum(p.y)) });
    const hasFederated = rounds.some((r) => isNum(r.federated_accuracy));
    const empty = rounds.length ? "no values reported" : "no rounds yet";

    drawChart($("#chart-accuracy"), {
      series: [series("test accuracy", "test_accuracy", COLORS.blue)]
        .concat(hasFederated ? [series("federated accuracy", "federated_accuracy", COLORS.orange)] : []),
      empty, yMax: 1, yStep: 0.2, format: (v) => `${Math.round(v * 100)}%`, valueText: pct,
    });
    drawChart($("#chart-loss"), {
      series: [series("train loss", "train_loss", COLORS.blue), series("test loss", "test_loss", COLORS.orange)],
      empty, format: (v) => String(Number(v.toFixed(3))), valueText: (v) => v.toFixed(4),
    });
    drawChart($("#chart-bytes"), {
      series: [
        series("bytes up", "bytes_up", COLORS.blue),
        series("bytes down", "bytes_down", COLORS.green, { hollow: true }),
        series("full-filter f32 up", "full_filter_f32_bytes_up", COLORS.grey, { dashed: true }),
      ],
      empty, byteAxis: true, valueText: bytes,
    });
  }

  // ---------------------------------------------------------------- charts

  function svgEl(parent, name, attrs, text) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    parent.appendChild(el);
    return el;
  }

  // A "nice" step (1, 2 or 5 times a power of ten) that splits span into about count parts.
  function niceStep(span, count) {
    const raw = span / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  }

  const W = 480, H = 230, M = { left: 56, right: 14, top: 30, bottom: 34 };

  // Draws one line chart: x = round, y from 0. Series points with null values are already gone.
  function drawChart(svg, opts) {
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const series = opts.series.filter((s) => s.points.length > 0);
    const points = series.flatMap((s) => s.points);
    if (points.length === 0) {
      svgEl(svg, "text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, opts.empty);
      return;
    }

    // Domains. One round gives a one-point domain: pad it so the point sits in the middle.
    const xs = points.map((p) => p.x);
    const xMin = Math.min(...xs), xMax = Math.max(...xs);
    const x0 = xMin === xMax ? xMin - 1 : xMin, x1 = xMin === xMax ? xMax + 1 : xMax;
    let yMax = opts.yMax, yStep = opts.yStep;
    if (yMax === undefined) {
      const top = Math.max(...points.map((p) => p.y));
      yStep = niceStep(top > 0 ? top : 1, 4);
      yMax = Math.max(yStep, Math.ceil(top / yStep - 1e-9) * yStep);
    }
    let format = opts.format;
    if (opts.byteAxis) {
      const unit = byteUnit(yMax);
      format = (v) => `${Number((v / 1000 ** unit).toFixed(2))} ${BYTE_UNITS[unit]}`;
    }
    const plotW = W - M.left - M.right, plotH = H - M.top - M.bottom;
    const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * plotW;
    const sy = (y) => M.top + plotH - (Math.min(y, yMax) / yMax) * plotH;

    // Grid and y ticks.
    for (let i = 0; i * yStep <= yMax + yStep * 1e-6; i++) {
      const v = i * yStep, y = sy(v);
      svgEl(svg, "line", { x1: M.left, x2: W - M.right, y1: y, y2: y, class: i === 0 ? "axis" : "grid" });
      svgEl(svg, "text", { x: M.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, format(v));
    }
    // x ticks: whole rounds within the data range.
    const xStep = Math.max(1, Math.round(niceStep(Math.max(1, xMax - xMin), 6)));
    for (let x = Math.ceil(xMin / xStep) * xStep; x <= xMax; x += xStep) {
      svgEl(svg, "line", { x1: sx(x), x2: sx(x), y1: M.top + plotH, y2: M.top + plotH + 4, class: "axis" });
      svgEl(svg, "text", { x: sx(x), y: M.top + plotH + 16, class: "tick", "text-anchor": "middle" }, String(x));
    }
    svgEl(svg, "line", { x1: M.left, x2: M.left, y1: M.top, y2: M.top + plotH, class: "axis" });
    svgEl(svg, "text", { x: M.left + plotW / 2, y: H - 4, class: "axis-label", "text-anchor": "middle" }, "round");

    // Lines, then points on top, each point with a tooltip.
    for (const s of series) {
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join("");
      svgEl(svg, "path", { d, class: "line", stroke: s.color, ...(s.dashed ? { "stroke-dasharray": "5 4" } : {}) });
    }
    for (const s of series) {
      for (const p of s.points) {
        const c = svgEl(svg, "circle", {
          cx: sx(p.x), cy: sy(p.y), r: s.hollow ? 3.5 : 2.5, class: "point",
          fill: s.hollow ? "none" : s.dashed ? "#fff" : s.color, stroke: s.color,
        });
        svgEl(c, "title", {}, `round ${p.x} \u00b7 ${s.name}: ${opts.valueText(p.y)}`);
      }
    }

    // Legend along the top.
    let lx = M.left;
    for (const s of series) {
      svgEl(svg, "line", { x1: lx, x2: lx + 18, y1: 12, y2: 12, stroke: s.color, class: "line",
        ...(s.dashed ? { "stroke-dasharray": "5 4" } : {}) });
      svgEl(svg, "text", { x: lx + 23, y: 16, class: "legend" }, s.name);
      lx += 23 + s.name.length * 6.3 + 16;
    }
  }

  // ---------------------------------------------------------------- start

  $("#token-clear").hidden = !state.token;
  tick();
  setInterval(periodic, POLL_MS);
})();
