/* The live campaign dashboard: plain JavaScript, no build step.
 *
 * Sign in with an organization id and a read key (typed, or from the URL
 * fragment #organization=..&key=.., which never reaches a server); both stay
 * in sessionStorage. Every API call sends `authorization: Bearer <key>`.
 * The numbers come from the REST routes, then live from a subscription's
 * Server-Sent Events: each update carries a campaign's new metrics and the
 * organization's summary, so rows and tiles change at once; the charts
 * re-read the trends, at most once every 2 s.
 */
"use strict";

(() => {
  const SESSION_KEY = "campaign-analytics.session";
  const WINDOW_KEY = "campaign-analytics.window";

  // Steps give at most ~300 points per chart (the window is a multiple of the step).
  const WINDOWS = new Map([
    [900, { step: 5, label: "15 min" }],
    [3600, { step: 15, label: "1 hour" }],
    [86400, { step: 300, label: "24 hours" }],
    [604800, { step: 3600, label: "7 days" }],
  ]);
  const DEFAULT_WINDOW = 3600;

  const CHART_THROTTLE_MS = 2000; // charts re-read the trends at most this often
  const DATA_REFRESH_MS = 30000; // numbers leave the window with no update: re-read them
  const STALE_STREAM_MS = 45000; // three heartbeats missed: the stream is dead
  const OFFLINE_AFTER_MS = 15000; // reconnecting this long: say offline
  const MAX_BACKOFF_MS = 15000;

  const COUNTERS = ["impressions", "clicks", "conversions", "adPlaybacks", "engagements", "completions", "skips"];

  // ---- formatting -------------------------------------------------------

  const formats = (() => {
    const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
    const money = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    const unitMoney = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 4 });
    const percent = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    const short = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
    return {
      count: (v) => whole.format(v),
      money: (v) => money.format(v),
      unitMoney: (v) => unitMoney.format(v),
      rate: (v) => `${percent.format(v)} %`,
      seconds: (v) => `${short.format(v)} s`,
      short: (v) => short.format(v),
    };
  })();

  const SUMMARY_TILES = [
    ["totalImpressions", "Impressions", "count"],
    ["totalAdPlaybacks", "Views", "count"],
    ["totalClicks", "Clicks", "count"],
    ["totalConversions", "Conversions", "count"],
    ["totalSpent", "Spend", "money"],
    ["overallCtr", "CTR", "rate"],
    ["overallConversionRate", "Conversion rate", "rate"],
    ["overallCpc", "CPC", "unitMoney"],
    ["overallCpa", "CPA", "unitMoney"],
    ["overallCompletionRate", "Completion rate", "rate"],
    ["averageViewTime", "Avg. view time", "seconds"],
    ["activeCampaigns", "Active campaigns", "count"],
  ];

  const CAMPAIGN_TILES = [
    ["impressions", "Impressions", "count"],
    ["adPlaybacks", "Views", "count"],
    ["clicks", "Clicks", "count"],
    ["conversions", "Conversions", "count"],
    ["totalSpent", "Spend", "money"],
    ["ctr", "CTR", "rate"],
    ["conversionRate", "Conversion rate", "rate"],
    ["cpc", "CPC", "unitMoney"],
    ["cpa", "CPA", "unitMoney"],
    ["completionRate", "Completion rate", "rate"],
    ["skipRate", "Skip rate", "rate"],
    ["engagementRate", "Engagement rate", "rate"],
    ["averageViewTime", "Avg. view time", "seconds"],
    ["conversionValue", "Conversion value", "money"],
  ];

  const TABLE_COLUMNS = [
    ["impressions", "Impressions", "count"],
    ["adPlaybacks", "Views", "count"],
    ["clicks", "Clicks", "count"],
    ["conversions", "Conversions", "count"],
    ["ctr", "CTR", "rate"],
    ["conversionRate", "Conv. rate", "rate"],
    ["totalSpent", "Spend", "money"],
    ["cpc", "CPC", "unitMoney"],
    ["cpa", "CPA", "unitMoney"],
    ["completionRate", "Completion", "rate"],
  ];

  const FUNNEL_STEPS = [
    ["impressions", "Impressions"],
    ["adPlaybacks", "Views"],
    ["clicks", "Clicks"],
    ["conversions", "Conversions"],
  ];

  const CHARTS = [
    { key: "eventsPerSecond", title: "Events per second", color: "#1f4fd1", format: "short",
      value: (p, seconds) => COUNTERS.reduce((sum, name) => sum + (p[name] || 0), 0) / seconds },
    { key: "ctr", title: "CTR (%)", color: "#0b7a4b", format: "short", value: (p) => p.ctr || 0 },
    { key: "spend", title: "Spend", perStep: true, color: "#a3460f", format: "money",
      value: (p) => p.totalSpent || 0 },
  ];

  // ---- state ------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const state = {
    session: null, // {organizationId, key}
    epoch: 0, // bumped at each sign in and out: late answers of an old session are dropped
    window: DEFAULT_WINDOW,
    campaigns: new Map(), // campaign id -> {name}
    metrics: new Map(), // campaign id -> RealTimeMetrics of the current window
    summary: null,
    summaryAt: 0,
    view: { name: "overview", campaignId: null },
    charts: new Map(), // container id -> [{spec, plot, box}]
    trendsMissing: false,
    firstTilesMarked: false,
  };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
    get refusesKey() {
      return this.status === 401 || this.status === 403;
    }
  }

  async function api(path, { method = "GET", body, keepalive = false } = {}) {
    const session = state.session;
    if (!session) throw new ApiError(0, "Not signed in");
    const headers = { authorization: `Bearer ${session.key}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        keepalive,
      });
    } catch {
      throw new ApiError(0, "The gateway cannot be reached");
    }
    let content = null;
    try {
      content = await response.json();
    } catch {
      content = null;
    }
    if (!response.ok) {
      const message = (content && (content.message || content.error)) || response.statusText;
      throw new ApiError(response.status, message || `HTTP ${response.status}`);
    }
    return content;
  }

  const query = (params) => new URLSearchParams(params).toString();
  const campaignPath = (id) => `/api/campaigns/${encodeURIComponent(id)}`;

  // A call of the signed-in session: a refused key signs out; an answer that
  // comes after sign-out (or for another session) is dropped.
  async function sessionCall(call) {
    const epoch = state.epoch;
    try {
      const result = await call();
      return epoch === state.epoch ? result : undefined;
    } catch (error) {
      if (epoch !== state.epoch) return undefined;
      if (error instanceof ApiError && error.refusesKey) {
        signOut(`Signed out: ${error.message} (HTTP ${error.status}).`);
        return undefined;
      }
      throw error;
    }
  }

  // ---- sign in and out --------------------------------------------------

  function credentialsFromFragment() {
    const fragment = location.hash.replace(/^#/, "");
    if (fragment.startsWith("/") || !/(^|&)key=/.test(fragment)) return null;
    const params = new URLSearchParams(fragment);
    const organizationId = (params.get("organization") || params.get("organizationId") || "").trim();
    const key = (params.get("key") || "").trim();
    // The key must not stay in the address bar (nor in the history).
    history.replaceState(null, "", location.pathname + location.search);
    return organizationId && key ? { organizationId, key } : null;
  }

  function storedCredentials() {
    try {
      const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
      if (stored && typeof stored.organizationId === "string" && typeof stored.key === "string") {
        return stored;
      }
    } catch {
      // unreadable: sign in again
    }
    return null;
  }

  async function signIn(credentials) {
    resetSession();
    state.session = credentials;
    const epoch = ++state.epoch;
    showSignIn(null, true);
    $("signin-organization").value = credentials.organizationId;
    try {
      const [dashboard, list] = await Promise.all([fetchDashboard(), fetchCampaignList()]);
      if (epoch !== state.epoch) return;
      sessionStorage.setItem(SESSION_KEY, JSON.stringify(credentials));
      showDashboard();
      applyCampaignList(list);
      applyDashboard(dashboard);
      startLive();
      route();
    } catch (error) {
      if (epoch !== state.epoch) return;
      const why = error instanceof ApiError && error.status ? ` (HTTP ${error.status})` : "";
      if (error instanceof ApiError && error.refusesKey) {
        signOut(`Sign-in failed: ${error.message}${why}. ` +
          "Check the organization id and use a read key of that organization.");
        return;
      }
      // The service is down or unreachable: the key may be fine, try again.
      showSignIn(`The dashboard cannot be loaded: ${error.message}${why}. Retrying…`, false);
      setTimeout(() => {
        if (epoch === state.epoch) signIn(credentials);
      }, 5000);
    }
  }

  function signOut(message) {
    stopLive();
    resetSession();
    state.epoch += 1;
    state.session = null;
    sessionStorage.removeItem(SESSION_KEY);
    showSignIn(message || null, false);
  }

  // Forgets every number shown, so that nothing of a session outlives it.
  function resetSession() {
    stopLive();
    state.campaigns.clear();
    state.metrics.clear();
    state.summary = null;
    state.summaryAt = 0;
    state.trendsMissing = false;
    for (const id of state.charts.keys()) destroyCharts(id);
    $("summary-tiles").replaceChildren();
    $("campaign-tiles").replaceChildren();
    $("campaigns").tBodies[0].replaceChildren();
    $("funnel").replaceChildren();
    $("campaign-title").textContent = "";
    $("crumb-campaign").textContent = "";
    $("session-organization").textContent = "";
    $("updated").textContent = "";
  }

  function showSignIn(error, busy) {
    $("dashboard").hidden = true;
    $("session").hidden = true;
    $("signin").hidden = false;
    const box = $("signin-error");
    box.hidden = !error;
    box.textContent = error || "";
    $("signin-submit").disabled = busy;
    $("signin-submit").textContent = busy ? "Signing in…" : "Sign in";
    $("signin-key").value = "";
    if (!busy) (error ? $("signin-key") : $("signin-organization")).focus();
  }

  function showDashboard() {
    $("signin").hidden = true;
    $("signin-error").hidden = true;
    $("signin-submit").disabled = false;
    $("signin-submit").textContent = "Sign in";
    $("session").hidden = false;
    $("dashboard").hidden = false;
    $("session-organization").textContent = state.session.organizationId;
  }

  // ---- reading ----------------------------------------------------------

  function fetchDashboard() {
    return api(`/api/analytics/real-time/dashboard?${query({
      organizationId: state.session.organizationId, timeWindow: state.window })}`);
  }

  function fetchCampaignList() {
    return api(`/api/campaigns?${query({ organizationId: state.session.organizationId })}`);
  }

  async function refreshOverview() {
    const [dashboard, list] = await Promise.all([
      sessionCall(fetchDashboard),
      sessionCall(fetchCampaignList),
    ]);
    if (list) applyCampaignList(list);
    if (dashboard) applyDashboard(dashboard);
  }

  async function refreshData() {
    await refreshOverview();
    if (state.view.name === "campaign") await loadCampaign(state.view.campaignId);
  }

  function applyCampaignList(list) {
    for (const campaign of list.campaigns || []) {
      state.campaigns.set(campaign.campaignId, { name: campaign.name || campaign.campaignId });
    }
    renderTable();
  }

  function applyDashboard(dashboard) {
    if (dashboard.timeWindow !== state.window) return; // asked before the window changed
    const at = Date.parse(dashboard.timestamp) || Date.now();
    const listed = new Set();
    for (const metrics of dashboard.campaignMetrics || []) {
      listed.add(metrics.campaignId);
      acceptMetrics(metrics, at);
    }
    for (const [campaignId, metrics] of state.metrics) {
      // No events in the window any more (none newer came since).
      if (!listed.has(campaignId) && metrics.receivedAt <= at) state.metrics.delete(campaignId);
    }
    acceptSummary(dashboard.summary, at, true);
    renderTable();
    showUpdated(at);
    if (!state.firstTilesMarked) {
      state.firstTilesMarked = true;
      performance.mark("dashboard-tiles-filled");
    }
  }

  // Keeps the newer of two snapshots of a campaign.
  function acceptMetrics(metrics, at) {
    const known = state.metrics.get(metrics.campaignId);
    if (known && known.receivedAt > at) return false;
    state.metrics.set(metrics.campaignId, { ...metrics, receivedAt: at });
    if (!state.campaigns.has(metrics.campaignId)) {
      state.campaigns.set(metrics.campaignId, { name: metrics.campaignId });
    }
    return true;
  }

  function acceptSummary(summary, at, exact) {
    if (!summary || at < state.summaryAt) return;
    const next = { ...summary };
    // An update's summary does not count active campaigns (it reads 0): count
    // the campaigns with events in the window among those known here.
    if (!exact && !next.activeCampaigns) next.activeCampaigns = countActive();
    state.summary = next;
    state.summaryAt = at;
    renderTiles($("summary-tiles"), SUMMARY_TILES, next, "summary");
  }

  function countActive() {
    let active = 0;
    for (const metrics of state.metrics.values()) {
      if (COUNTERS.some((name) => (metrics[name] || 0) > 0)) active += 1;
    }
    return active;
  }

  // ---- rendering --------------------------------------------------------

  function setNumber(element, value, format) {
    const number = Number(value) || 0;
    const raw = String(number);
    if (element.dataset.raw === raw) return;
    const changed = element.dataset.raw !== undefined;
    element.dataset.raw = raw;
    element.textContent = formats[format](number);
    if (changed) {
      element.classList.remove("changed");
      void element.offsetWidth; // restart the highlight
      element.classList.add("changed");
    }
  }

  function renderTiles(container, tiles, values, prefix) {
    if (!container.firstChild) {
      for (const [name, label] of tiles) {
        const tile = document.createElement("div");
        tile.className = "tile";
        tile.dataset.metric = name;
        const title = document.createElement("span");
        title.className = "label";
        title.id = `${prefix}-${name}-label`;
        title.textContent = label;
        const value = document.createElement("span");
        value.className = "value";
        value.setAttribute("aria-labelledby", title.id);
        tile.append(title, value);
        container.append(tile);
      }
    }
    for (const [name, , format] of tiles) {
      setNumber(container.querySelector(`[data-metric="${name}"] .value`), values[name], format);
    }
  }

  function renderTable() {
    const head = $("campaigns-head");
    if (!head.firstChild) {
      const first = document.createElement("th");
      first.scope = "col";
      first.textContent = "Campaign";
      head.append(first);
      for (const [, label] of TABLE_COLUMNS) {
        const th = document.createElement("th");
        th.scope = "col";
        th.className = "number";
        th.textContent = label;
        head.append(th);
      }
    }
    const body = $("campaigns").tBodies[0];
    for (const [campaignId, campaign] of state.campaigns) {
      let row = body.querySelector(`tr[data-campaign="${CSS.escape(campaignId)}"]`);
      if (!row) {
        row = document.createElement("tr");
        row.dataset.campaign = campaignId;
        const name = document.createElement("th");
        name.scope = "row";
        const link = document.createElement("a");
        link.href = `#/campaign/${encodeURIComponent(campaignId)}`;
        name.append(link);
        row.append(name);
        for (const [metric] of TABLE_COLUMNS) {
          const cell = document.createElement("td");
          cell.className = "number";
          cell.dataset.metric = metric;
          row.append(cell);
        }
        body.append(row);
      }
      const link = row.querySelector("a");
      link.textContent = campaign.name;
      link.title = campaignId;
      const metrics = state.metrics.get(campaignId) || {};
      for (const [metric, , format] of TABLE_COLUMNS) {
        setNumber(row.querySelector(`td[data-metric="${metric}"]`), metrics[metric], format);
      }
    }
    $("campaigns-empty").hidden = state.campaigns.size > 0;
  }

  function renderFunnel(metrics) {
    const funnel = $("funnel");
    if (!funnel.firstChild) {
      for (const [name, label] of FUNNEL_STEPS) {
        const item = document.createElement("li");
        item.dataset.step = name;
        item.innerHTML =
          '<span class="step-label"></span><span class="step-bar"><span></span></span>' +
          '<span class="count"></span><span class="step-rate"></span>';
        item.querySelector(".step-label").textContent = label;
        funnel.append(item);
      }
    }
    const top = Math.max(1, ...FUNNEL_STEPS.map(([name]) => metrics[name] || 0));
    let previous = null;
    for (const [name] of FUNNEL_STEPS) {
      const item = funnel.querySelector(`li[data-step="${name}"]`);
      const count = metrics[name] || 0;
      setNumber(item.querySelector(".count"), count, "count");
      item.querySelector(".step-bar span").style.width = `${(count / top) * 100}%`;
      const rate = item.querySelector(".step-rate");
      if (previous === null) {
        rate.textContent = "";
        delete rate.dataset.raw;
      } else if (previous === 0) {
        rate.textContent = "– of previous";
        rate.dataset.raw = "";
      } else {
        const percent = Math.round((count / previous) * 10000) / 100;
        rate.dataset.raw = String(percent);
        rate.textContent = `${formats.rate(percent)} of previous`;
      }
      previous = count;
    }
  }

  function showUpdated(at) {
    $("updated").textContent = `Updated ${new Date(at).toLocaleTimeString()}`;
  }

  // ---- views ------------------------------------------------------------

  function route() {
    if (!state.session) return;
    const match = location.hash.match(/^#\/campaign\/(.+)$/);
    let campaignId = null;
    try {
      campaignId = match ? decodeURIComponent(match[1]) : null;
    } catch {
      campaignId = null; // a mangled link: show the overview
    }
    if (campaignId) {
      showCampaignView(campaignId);
    } else {
      showOverview();
    }
  }

  function showOverview() {
    state.view = { name: "overview", campaignId: null };
    destroyCharts("campaign-charts");
    $("campaign-view").hidden = true;
    $("overview-view").hidden = false;
    $("crumb-campaign").hidden = true;
    document.title = "Campaign analytics";
    ensureCharts("overview-charts");
    refreshCharts();
  }

  async function showCampaignView(campaignId) {
    state.view = { name: "campaign", campaignId };
    destroyCharts("overview-charts");
    $("overview-view").hidden = true;
    $("campaign-view").hidden = false;
    const name = (state.campaigns.get(campaignId) || {}).name || campaignId;
    $("campaign-title").textContent = name === campaignId ? campaignId : `${name} (${campaignId})`;
    $("crumb-campaign").textContent = `› ${name}`;
    $("crumb-campaign").hidden = false;
    document.title = `${name} · Campaign analytics`;
    $("campaign-tiles").replaceChildren();
    $("funnel").replaceChildren();
    const known = state.metrics.get(campaignId);
    if (known) renderCampaign(known);
    ensureCharts("campaign-charts");
    refreshCharts();
    try {
      await loadCampaign(campaignId);
    } catch (error) {
      showCampaignNote(`Could not read this campaign: ${error.message}`);
    }
  }

  async function loadCampaign(campaignId) {
    const reply = await sessionCall(() =>
      api(`${campaignPath(campaignId)}/analytics/real-time?${query({ timeWindow: state.window })}`));
    if (!reply || state.view.campaignId !== campaignId || reply.timeWindow !== state.window) return;
    const at = Date.parse(reply.timestamp) || Date.now();
    const known = state.metrics.get(campaignId);
    if (reply.metrics) {
      acceptMetrics(reply.metrics, at);
    } else if (known && known.receivedAt <= at) {
      state.metrics.delete(campaignId); // no events in the window
    }
    renderTable();
    renderCampaign(state.metrics.get(campaignId) || { campaignId });
  }

  function renderCampaign(metrics) {
    const empty = !COUNTERS.some((name) => (metrics[name] || 0) > 0);
    showCampaignNote(empty ? "No events in this window." : "");
    renderTiles($("campaign-tiles"), CAMPAIGN_TILES, metrics, "campaign");
    renderFunnel(metrics);
  }

  function showCampaignNote(text) {
    $("campaign-note").textContent = text;
    $("campaign-note").hidden = !text;
  }

  // ---- charts -----------------------------------------------------------

  function ensureCharts(containerId) {
    if (state.charts.has(containerId)) return;
    const container = $(containerId);
    const charts = CHARTS.map((spec) => {
      const figure = document.createElement("figure");
      figure.className = "chart";
      figure.dataset.chart = spec.key;
      const caption = document.createElement("figcaption");
      caption.textContent = spec.title;
      const box = document.createElement("div");
      box.className = "plot";
      box.setAttribute("role", "img");
      box.setAttribute("aria-label", `${spec.title}: loading`);
      figure.append(caption, box);
      container.append(figure);
      return { spec, box, caption, plot: null };
    });
    const observer = new ResizeObserver(() => requestAnimationFrame(() => resizeCharts(containerId)));
    observer.observe(container);
    state.charts.set(containerId, { charts, observer });
  }

  function destroyCharts(containerId) {
    const entry = state.charts.get(containerId);
    if (!entry) return;
    entry.observer.disconnect();
    for (const chart of entry.charts) if (chart.plot) chart.plot.destroy();
    state.charts.delete(containerId);
    $(containerId).replaceChildren();
  }

  function resizeCharts(containerId) {
    for (const chart of chartsOf(containerId)) {
      const width = Math.floor(chart.box.clientWidth);
      if (chart.plot && width > 0 && width !== chart.plot.width) {
        chart.plot.setSize({ width, height: chart.plot.height });
      }
    }
  }

  function makePlot(chart, data) {
    const format = formats[chart.spec.format];
    const axis = { stroke: "#3b4252", grid: { stroke: "#e3e6ee", width: 1 }, ticks: { stroke: "#c9cedb" } };
    return new uPlot({
      width: Math.max(200, Math.floor(chart.box.clientWidth)),
      height: 180,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [axis, { ...axis, size: 56, values: (u, values) => values.map((v) => formats.short(v)) }],
      series: [
        {},
        {
          label: chart.spec.title,
          stroke: chart.spec.color,
          fill: `${chart.spec.color}22`,
          width: 2,
          points: { show: false },
          value: (u, v) => (v == null ? "–" : format(v)),
        },
      ],
    }, data, chart.box);
  }

  let chartTimer = null;
  let chartLast = 0;
  let chartBusy = false;
  let chartAgain = false;

  // Re-reads the trends now, or as soon as the throttle allows.
  function scheduleCharts() {
    if (chartTimer) return;
    const wait = Math.max(0, chartLast + CHART_THROTTLE_MS - Date.now());
    chartTimer = setTimeout(() => {
      chartTimer = null;
      refreshCharts();
    }, wait);
  }

  async function refreshCharts() {
    if (!state.session || state.trendsMissing) return;
    if (chartBusy) {
      chartAgain = true;
      return;
    }
    chartBusy = true;
    chartLast = Date.now();
    const view = state.view;
    const containerId = view.name === "campaign" ? "campaign-charts" : "overview-charts";
    const timeWindow = state.window;
    const step = WINDOWS.get(timeWindow).step;
    const params = query({ timeWindow, step });
    const path = view.name === "campaign"
      ? `${campaignPath(view.campaignId)}/analytics/trends?${params}`
      : `/api/analytics/real-time/trends?${query({ organizationId: state.session.organizationId })}&${params}`;
    try {
      const trends = await sessionCall(() => api(path));
      if (trends && state.view === view && state.window === timeWindow) {
        drawCharts(containerId, trends, trends.step || step);
      }
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 501) && !view.campaignId) {
        state.trendsMissing = true; // a gateway without the trends route
      }
      chartNote(containerId, `Charts unavailable: ${error.message}`);
    } finally {
      chartBusy = false;
      if (chartAgain) {
        chartAgain = false;
        scheduleCharts();
      }
    }
  }

  function chartsOf(containerId) {
    const entry = state.charts.get(containerId);
    return entry ? entry.charts : [];
  }

  function drawCharts(containerId, trends, step) {
    const points = trends.points || [];
    const times = points.map((p) => Date.parse(p.windowStart) / 1000);
    // The newest point covers the seconds of its step elapsed so far (the
    // current one included): a rate over the whole step would dip there.
    const now = Math.floor((Date.parse(trends.timestamp) || Date.now()) / 1000);
    const seconds = times.map((start, i) =>
      i === times.length - 1 ? Math.min(step, Math.max(1, now - start + 1)) : step);
    for (const chart of chartsOf(containerId)) {
      if (chart.spec.perStep) chart.caption.textContent = `${chart.spec.title} per ${stepLabel(step)}`;
      const values = points.map((p, i) => chart.spec.value(p, seconds[i]));
      if (chart.plot) {
        chart.plot.setData([times, values]);
      } else {
        chart.box.replaceChildren();
        chart.plot = makePlot(chart, [times, values]);
      }
      const latest = values.length ? values[values.length - 1] : 0;
      const peak = values.length ? Math.max(...values) : 0;
      const format = formats[chart.spec.format];
      chart.box.setAttribute("aria-label",
        `${chart.spec.title} over the last ${WINDOWS.get(state.window).label}, ` +
        `one point per ${stepLabel(step)}: latest ${format(latest)}, peak ${format(peak)}`);
      chart.box.dataset.points = String(values.length);
      chart.box.dataset.total = String(values.reduce((a, b) => a + b, 0));
    }
  }

  function stepLabel(step) {
    if (step % 3600 === 0) return step === 3600 ? "hour" : `${step / 3600} h`;
    if (step % 60 === 0) return step === 60 ? "minute" : `${step / 60} min`;
    return `${step} s`;
  }

  function chartNote(containerId, text) {
    for (const chart of chartsOf(containerId)) {
      if (chart.plot) continue;
      const note = document.createElement("p");
      note.className = "muted";
      note.textContent = text;
      chart.box.replaceChildren(note);
      chart.box.setAttribute("aria-label", `${chart.spec.title}: ${text}`);
    }
  }

  // ---- live updates -----------------------------------------------------

  const live = {
    generation: 0, // bumped by stopLive: callbacks of an old stream do nothing
    subscriptionId: null,
    source: null,
    retryTimer: null,
    attempts: 0,
    troubleSince: 0,
    lastFrameAt: 0,
    watchdog: null,
  };

  function setConnection(connection) {
    const badge = $("connection");
    if (badge.dataset.state === connection) return;
    badge.dataset.state = connection;
    badge.textContent = connection;
  }

  function troubled() {
    if (!live.troubleSince) live.troubleSince = Date.now();
    const long = Date.now() - live.troubleSince > OFFLINE_AFTER_MS;
    setConnection(!navigator.onLine || long ? "offline" : "reconnecting");
  }

  async function startLive() {
    const generation = ++live.generation;
    clearTimeout(live.retryTimer);
    if (!live.attempts) setConnection("connecting");
    const timeWindow = state.window;
    let reply;
    try {
      reply = await sessionCall(() => api("/api/analytics/real-time/subscribe", {
        method: "POST",
        body: { organizationId: state.session.organizationId, timeWindow },
      }));
    } catch {
      if (generation === live.generation) retryLive(generation);
      return;
    }
    if (!reply) return; // signed out meanwhile
    const id = reply.subscription.id;
    if (generation !== live.generation) {
      removeSubscription(id);
      return;
    }
    live.subscriptionId = id;
    // After a lost subscription, start from the current numbers.
    openStream(generation, id, live.attempts > 0);
  }

  function openStream(generation, id, resume) {
    const url = `/api/analytics/real-time/updates?${query({ subscriptionId: id, format: "sse" })}` +
      (resume ? "&lastEventId=0" : "");
    const source = new EventSource(url);
    live.source = source;
    live.lastFrameAt = Date.now();
    source.onopen = () => {
      if (generation !== live.generation) return;
      live.lastFrameAt = Date.now();
    };
    source.onmessage = (message) => {
      if (generation !== live.generation) return;
      live.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === "connected") {
        const recovered = live.attempts > 0 || live.troubleSince > 0;
        live.attempts = 0;
        live.troubleSince = 0;
        setConnection("live");
        if (recovered) {
          refreshData().catch(() => {});
          scheduleCharts();
        }
      } else if (frame.type === "update") {
        applyUpdate(frame.data);
      } else if (frame.type === "error") {
        // The subscription ended (removed, or its server restarted): make another.
        source.close();
        retryLive(generation);
      }
    };
    source.onerror = () => {
      if (generation !== live.generation) return;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (404: the subscription is gone, e.g. its server restarted;
        // or 503): subscribe again.
        retryLive(generation);
      } else {
        troubled(); // the browser reconnects by itself, with Last-Event-ID
      }
    };
    clearInterval(live.watchdog);
    live.watchdog = setInterval(() => {
      if (generation !== live.generation) return;
      if (source.readyState === EventSource.OPEN && Date.now() - live.lastFrameAt > STALE_STREAM_MS) {
        source.close();
        troubled();
        openStream(generation, id, true);
      }
    }, 5000);
  }

  function retryLive(generation) {
    if (generation !== live.generation || !state.session) return;
    if (live.source) live.source.close();
    live.source = null;
    clearInterval(live.watchdog);
    troubled();
    live.attempts += 1;
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(live.attempts, 8));
    clearTimeout(live.retryTimer);
    live.retryTimer = setTimeout(() => {
      if (generation === live.generation) startLive();
    }, delay * (0.75 + Math.random() / 2));
  }

  function stopLive() {
    live.generation += 1;
    clearTimeout(live.retryTimer);
    clearInterval(live.watchdog);
    if (live.source) live.source.close();
    live.source = null;
    if (live.subscriptionId) removeSubscription(live.subscriptionId);
    live.subscriptionId = null;
    live.attempts = 0;
    live.troubleSince = 0;
  }

  function removeSubscription(id) {
    if (!state.session) return;
    // keepalive: it is sent even while the page unloads. Failures do not
    // matter: an unread subscription is removed by the server in time.
    api(`/api/analytics/real-time/subscribe?${query({ subscriptionId: id })}`,
      { method: "DELETE", keepalive: true }).catch(() => {});
  }

  function applyUpdate(update) {
    const session = state.session;
    if (!session || !update || !update.data || update.organizationId !== session.organizationId) return;
    const { campaignId, metrics, summary } = update.data;
    if (metrics && metrics.timeWindow && metrics.timeWindow !== state.window) return;
    const at = Date.parse(update.timestamp) || Date.now();
    if (metrics && acceptMetrics({ ...metrics, campaignId }, at)) {
      renderTable();
      if (state.view.name === "campaign" && state.view.campaignId === campaignId) {
        renderCampaign(state.metrics.get(campaignId));
      }
    }
    acceptSummary(summary, at, false);
    showUpdated(at);
    scheduleCharts();
  }

  // ---- wiring -----------------------------------------------------------

  function changeWindow(seconds) {
    if (!WINDOWS.has(seconds) || seconds === state.window) return;
    state.window = seconds;
    sessionStorage.setItem(WINDOW_KEY, String(seconds));
    state.metrics.clear();
    state.summaryAt = 0;
    renderTable();
    stopLive();
    startLive();
    for (const id of [...state.charts.keys()]) destroyCharts(id);
    route(); // the view again: its charts, and the campaign's numbers
    refreshOverview().catch((error) => showUpdatedError(error));
  }

  function showUpdatedError(error) {
    $("updated").textContent = `Could not refresh: ${error.message}`;
  }

  function boot() {
    const stored = Number(sessionStorage.getItem(WINDOW_KEY));
    state.window = WINDOWS.has(stored) ? stored : DEFAULT_WINDOW;
    $("window").value = String(state.window);

    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const organizationId = $("signin-organization").value.trim();
      const key = $("signin-key").value.trim();
      if (!organizationId || !key) {
        showSignIn("Enter the organization id and an API key.", false);
        $("signin-organization").value = organizationId;
        return;
      }
      signIn({ organizationId, key });
    });
    $("sign-out").addEventListener("click", () => {
      history.replaceState(null, "", location.pathname + location.search);
      signOut(null);
    });
    $("window").addEventListener("change", (event) => changeWindow(Number(event.target.value)));
    $("campaigns").addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-campaign]");
      if (row && !event.target.closest("a")) {
        location.hash = `#/campaign/${encodeURIComponent(row.dataset.campaign)}`;
      }
    });
    window.addEventListener("hashchange", () => {
      const credentials = credentialsFromFragment();
      if (credentials) signIn(credentials);
      else route();
    });
    window.addEventListener("offline", () => state.session && setConnection("offline"));
    window.addEventListener("online", () => {
      if (state.session && !live.source) {
        stopLive();
        startLive();
      }
    });
    window.addEventListener("pagehide", () => {
      if (live.subscriptionId) removeSubscription(live.subscriptionId);
      live.subscriptionId = null;
    });
    window.addEventListener("pageshow", (event) => {
      if (event.persisted && state.session) {
        stopLive();
        startLive();
      }
    });
    setInterval(() => {
      if (state.session && document.visibilityState === "visible") {
        refreshData().catch((error) => showUpdatedError(error));
      }
    }, DATA_REFRESH_MS);
    setInterval(() => {
      // Time moves the charts' window even without events: one step, at most a minute.
      const every = Math.max(5000, Math.min(60000, WINDOWS.get(state.window).step * 1000));
      if (state.session && document.visibilityState === "visible" && Date.now() - chartLast >= every) {
        scheduleCharts();
      }
    }, 5000);

    const credentials = credentialsFromFragment() || storedCredentials();
    if (credentials) signIn(credentials);
    else showSignIn(null, false);
  }

  boot();
})();
