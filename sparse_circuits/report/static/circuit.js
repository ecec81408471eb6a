// The circuit page: draws the graph from the page's JSON and fills the node panel on click.
// Text from the corpus or the tasks is only ever set with textContent, never parsed as HTML.
"use strict";

const DATA = JSON.parse(document.getElementById("page-data").textContent);
const SVG_NS = "http://www.w3.org/2000/svg";
const ROW_GAP = 54, COL_GAP = 26, LEFT = 150, TOP = 24, RADIUS = 8;
const LOCATION_COLOURS = {
  "attn.act_in": "#fde68a", "attn.q": "#fca5a5", "attn.k": "#f9a8d4", "attn.v": "#c4b5fd",
  "attn.resid_delta": "#93c5fd", "mlp.act_in": "#a7f3d0", "mlp.post_act": "#6ee7b7", "mlp.resid_delta": "#5eead4",
};
const LOCATION_NAMES = {
  "attn.act_in": "attention input (residual channel, after the norm)", "attn.q": "query channel",
  "attn.k": "key channel", "attn.v": "value channel", "attn.resid_delta": "attention output (residual channel)",
  "mlp.act_in": "MLP input (residual channel, after the norm)", "mlp.post_act": "MLP neuron",
  "mlp.resid_delta": "MLP output (residual channel)",
};

function el(tag, attrs = {}, text = null) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
function parse(id) {
  const cut = id.lastIndexOf(":");
  const site = id.slice(0, cut), index = Number(id.slice(cut + 1));
  const dot = site.indexOf(".");
  return { id, site, index, layer: Number(site.slice(0, dot)), location: site.slice(dot + 1) };
}
function fmt(x, digits = 3) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
function tokenText(t) { const s = DATA.vocab[String(t)]; return s === undefined ? "?" : s; }

// -- graph -----------------------------------------------------------------------------------
const nodes = DATA.nodes.map(parse);
const byId = new Map(nodes.map((n) => [n.id, n]));
const rows = [];
for (let layer = 0; layer < DATA.model.n_layer; layer++) {
  for (const location of DATA.locations) {
    const members = nodes.filter((n) => n.layer === layer && n.location === location).sort((a, b) => a.index - b.index);
    if (members.length) rows.push({ layer, location, members });
  }
}
rows.reverse(); // the first layer at the bottom, the output at the top
const widest = Math.max(1, ...rows.map((r) => r.members.length));
const width = LEFT + widest * COL_GAP + 40, height = TOP + Math.max(1, rows.length) * ROW_GAP;
rows.forEach((row, r) => {
  const offset = LEFT + ((widest - row.members.length) * COL_GAP) / 2 + COL_GAP / 2;
  row.members.forEach((n, i) => { n.x = offset + i * COL_GAP; n.y = TOP + r * ROW_GAP + ROW_GAP / 2; });
});

const graph = document.getElementById("graph");
graph.setAttribute("width", width);
graph.setAttribute("height", height);
graph.setAttribute("viewBox", `0 0 ${width} ${height}`);
const edgeLayer = svg("g"), extraLayer = svg("g"), nodeLayer = svg("g");
graph.append(extraLayer, edgeLayer, nodeLayer);
rows.forEach((row, r) => {
  const label = svg("text", { x: 6, y: TOP + r * ROW_GAP + ROW_GAP / 2 + 4, class: "rowlabel" });
  label.textContent = `L${row.layer} ${row.location}`;
  graph.append(label);
});

const maxWeight = Math.max(1e-12, ...DATA.edges.map((e) => Math.abs(e[2])));
const edgeEls = [];
for (const [src, dst, w] of DATA.edges) {
  const a = byId.get(src), b = byId.get(dst);
  if (!a || !b) continue;
  const line = svg("line", {
    x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "edge",
    stroke: w >= 0 ? "rgb(194, 65, 12)" : "rgb(37, 99, 235)",
    "stroke-width": (0.6 + 3.4 * Math.abs(w) / maxWeight).toFixed(2),
    "stroke-opacity": (0.35 + 0.6 * Math.abs(w) / maxWeight).toFixed(2),
  });
  const title = svg("title");
  title.textContent = `${src} → ${dst}: ${w.toPrecision(3)}`;
  line.append(title);
  edgeLayer.append(line);
  edgeEls.push({ el: line, src, dst });
}
function curve(a, b, cls, attrs) {
  const bend = 30 + Math.abs(a.y - b.y) * 0.15;
  const path = svg("path", { d: `M${a.x},${a.y} C${a.x + bend},${a.y} ${b.x + bend},${b.y} ${b.x},${b.y}`,
                             fill: "none", class: `edge ${cls}`, ...attrs });
  extraLayer.append(path);
  edgeEls.push({ el: path, src: a.id, dst: b.id });
  return path;
}
const residualEls = DATA.residual_links.map(([s, d]) => curve(byId.get(s), byId.get(d), "residual",
  { stroke: "#9ca3af", "stroke-dasharray": "4 3", "stroke-width": 1 }));
const qkEls = DATA.qk_pairs.map(([q, k]) => curve(byId.get(q), byId.get(k), "qk",
  { stroke: "#16a34a", "stroke-dasharray": "1 3", "stroke-width": 1.5 }));
document.getElementById("show-residual").addEventListener("change", (e) => {
  for (const p of residualEls) p.style.display = e.target.checked ? "" : "none"; });
document.getElementById("show-qk").addEventListener("change", (e) => {
  for (const p of qkEls) p.style.display = e.target.checked ? "" : "none"; });

const circleOf = new Map();
for (const n of nodes) {
  const c = svg("circle", { cx: n.x, cy: n.y, r: RADIUS, class: "node", fill: LOCATION_COLOURS[n.location] || "#e5e7eb",
                            "data-node": n.id });
  const title = svg("title");
  title.textContent = n.id;
  c.append(title);
  c.addEventListener("click", () => select(n.id));
  nodeLayer.append(c);
  const idx = svg("text", { x: n.x, y: n.y + RADIUS + 10, "text-anchor": "middle", class: "idx" });
  idx.textContent = String(n.index);
  nodeLayer.append(idx);
  circleOf.set(n.id, c);
}

// -- panel -----------------------------------------------------------------------------------
const panel = document.getElementById("panel");

function select(id) {
  for (const c of circleOf.values()) c.classList.remove("selected");
  circleOf.get(id).classList.add("selected");
  for (const e of edgeEls) e.el.classList.toggle("dim", e.src !== id && e.dst !== id);
  renderPanel(byId.get(id));
  history.replaceState(null, "", "#" + encodeURIComponent(id));
}

function colourFor(value, scale) {
  if (!scale || !value) return "transparent";
  const a = Math.min(1, Math.abs(value) / scale) * 0.85;
  return `rgba(var(--${value > 0 ? "pos" : "neg"}), ${a.toFixed(3)})`;
}

function tokenLine(tokens, acts, scale, at = -1) {
  const box = el("div", { class: "tokens" });
  tokens.forEach((t, i) => {
    const text = tokenText(t);
    const span = el("span", { class: "tok" + (i === at ? " at" : "") });
    span.style.background = colourFor(acts ? acts[i] : 0, scale);
    if (acts) span.title = `${JSON.stringify(text)}: ${Number(acts[i]).toPrecision(3)}`;
    // Newlines and tabs stay visible as marks, and still break the line.
    const parts = text.split("\n");
    parts.forEach((part, j) => {
      if (j > 0) { span.append(el("span", { class: "nl" }, "↵")); span.append(document.createTextNode("\n")); }
      if (part) span.append(document.createTextNode(part.replace(/\t/g, "→   ")));
    });
    box.append(span);
  });
  return box;
}

function edgeList(title, list, otherEnd) {
  const section = el("div");
  section.append(el("h3", {}, `${title} (${list.length})`));
  const ul = el("ul", { class: "edges" });
  list.sort((a, b) => Math.abs(b[2]) - Math.abs(a[2]));
  for (const e of list) {
    const li = el("li");
    li.append(el("span", { class: "w " + (e[2] >= 0 ? "pos" : "neg") }, (e[2] >= 0 ? "+" : "") + e[2].toPrecision(3)));
    li.append(document.createTextNode("  " + otherEnd(e)));
    li.addEventListener("click", () => select(otherEnd(e)));
    ul.append(li);
  }
  if (!list.length) ul.append(el("li", { class: "muted" }, "none"));
  section.append(ul);
  return section;
}

function stripPlot(pairs) {
  // One row of dots per class (each dot a prompt), labels above the rows, zero marked.
  const values = pairs.a.concat(pairs.b);
  const lo = Math.min(0, ...values), hi = Math.max(0, ...values);
  const span = hi - lo || 1, W = 340, H = 78, pad = 10;
  const x = (v) => pad + ((v - lo) / span) * (W - 2 * pad);
  const plot = svg("svg", { width: W, height: H, class: "heat" });
  [["a", 22, DATA.task.candidates[0]], ["b", 52, DATA.task.candidates[1]]].forEach(([cls, y, cand]) => {
    const label = svg("text", { x: pad, y: y - 9 });
    label.textContent = `prompts answered ${JSON.stringify(cand)}`;
    plot.append(label);
    for (const v of pairs[cls]) {
      plot.append(svg("circle", { cx: x(v), cy: y, r: 3, fill: cls === "a" ? "#c2410c" : "#1d4ed8", "fill-opacity": 0.5 }));
    }
  });
  plot.append(svg("line", { x1: x(0), x2: x(0), y1: 14, y2: 58, stroke: "#9ca3af" }));
  for (const [v, anchor] of [[lo, "start"], [hi, "end"]]) {
    const tick = svg("text", { x: x(v), y: H - 4, "text-anchor": anchor });
    tick.textContent = v.toPrecision(3);
    plot.append(tick);
  }
  return plot;
}

function heatmap(example) {
  // Rows: query positions; columns: the sink (if any), then the key positions.
  const n = example.tokens.length, cell = Math.max(6, Math.min(14, Math.floor(300 / (n + 1))));
  const labelW = 70, W = labelW + (n + 1) * cell + 4, H = n * cell + 4;
  const plot = svg("svg", { width: W, height: H, class: "heat" });
  example.pattern.forEach((row, i) => {
    const label = svg("text", { x: labelW - 4, y: i * cell + cell - 2, "text-anchor": "end" });
    label.textContent = JSON.stringify(tokenText(example.tokens[i])).slice(0, 10);
    plot.append(label);
    row.forEach((p, j) => {
      const rect = svg("rect", { x: labelW + j * cell, y: i * cell, width: cell - 1, height: cell - 1,
                                 fill: `rgba(17, 24, 39, ${Math.min(1, p).toFixed(3)})` });
      const title = svg("title");
      title.textContent = `${JSON.stringify(tokenText(example.tokens[i]))} → ` +
        (j === 0 ? "sink" : JSON.stringify(tokenText(example.tokens[j - 1]))) + `: ${p.toFixed(3)}`;
      rect.append(title);
      plot.append(rect);
    });
  });
  return plot;
}

function renderPanel(n) {
  const info = DATA.panels[n.id];
  panel.replaceChildren();
  panel.append(el("h3", {}, n.id));
  panel.append(el("div", {}, `${LOCATION_NAMES[n.location] || n.location} ${n.index}, layer ${n.layer}` +
    (info.head !== null ? `, head ${info.head}` : "")));
  panel.append(el("div", { class: "muted" }, `mask score ${fmt(info.tau)} · role drift (activation correlation, ` +
    `circuit vs whole model) ${fmt(info.role_drift, 2)}`));

  const incoming = DATA.edges.filter((e) => e[1] === n.id), outgoing = DATA.edges.filter((e) => e[0] === n.id);
  panel.append(edgeList("Incoming edges", incoming, (e) => e[0]));
  panel.append(edgeList("Outgoing edges", outgoing, (e) => e[1]));

  if (info.writers) {
    panel.append(el("h3", {}, `Tokens: ${info.writers.kind}`));
    panel.append(el("div", { class: "muted" }, `${info.writers.nonzero} tokens with a nonzero weight`));
    for (const [name, list] of [["most positive", info.writers.top], ["most negative", info.writers.bottom]]) {
      const box = el("div", { class: "writers" });
      box.append(el("b", {}, name + ": "));
      for (const w of list) {
        const shown = tokenText(w.token).replace(/\n/g, "↵").replace(/\t/g, "→");
        box.append(el("span", { title: JSON.stringify(tokenText(w.token)) }, `${shown} ${w.value}`));
      }
      if (!list.length) box.append(el("i", { class: "muted" }, "none"));
      panel.append(box);
    }
  }

  const pairs = info.pairs;
  panel.append(el("h3", {}, "On the task pairs (in the pruned circuit, last prompt token)"));
  panel.append(el("div", {}, `mean for ${JSON.stringify(DATA.task.candidates[0])}-prompts ${fmt(pairs.mean_a)}, ` +
    `for ${JSON.stringify(DATA.task.candidates[1])}-prompts ${fmt(pairs.mean_b)}, difference ${fmt(pairs.mean_diff)}`));
  panel.append(stripPlot(pairs));
  const pairScale = Math.max(1e-9, ...pairs.examples.flatMap((ex) => ex.a.acts.concat(ex.b.acts).map(Math.abs)));
  pairs.examples.forEach((ex, i) => {
    const g = el("div", { class: "group" });
    g.append(el("div", { class: "muted" }, `pair ${i + 1}`));
    g.append(tokenLine(ex.a.tokens, ex.a.acts, pairScale, ex.a.tokens.length - 1));
    g.append(tokenLine(ex.b.tokens, ex.b.acts, pairScale, ex.b.tokens.length - 1));
    panel.append(g);
  });

  if (info.head !== null) {
    const head = DATA.heads[`${n.layer}.${info.head}`];
    panel.append(el("h3", {}, `Attention of layer ${n.layer} head ${info.head}, circuit query/key channels only`));
    if (!head.qk_channels.length) {
      panel.append(el("div", { class: "muted" }, "No query-key channel pair of this head is in the circuit: every score " +
        "is 0, so the pattern is uniform over the keys" + (head.sink ? " and the sink." : ".")));
    } else {
      panel.append(el("div", { class: "muted" }, `channels ${head.qk_channels.join(", ")}; ` +
        `rows: query positions, columns: ${head.sink ? "the sink, then " : ""}key positions`));
    }
    for (const ex of head.examples) {
      const last = ex.pattern[ex.pattern.length - 1];
      panel.append(el("div", { class: "muted" }, "the last token attends to:"));
      panel.append(tokenLine(ex.tokens, last.slice(1), 1, ex.tokens.length - 1));
      panel.append(heatmap(ex));
    }
  }

  const s = info.snippets;
  panel.append(el("h3", {}, "Pretraining text"));
  panel.append(el("div", { class: "muted" }, `${DATA.snippet_source}; positive on ${(100 * s.fires_positive).toFixed(1)}% ` +
    `of tokens, negative on ${(100 * s.fires_negative).toFixed(1)}%; range ${fmt(s.min)} … ${fmt(s.max)}`));
  const scale = Math.max(Math.abs(s.max), Math.abs(s.min), 1e-9);
  for (const [title, groups] of [["Most positive", s.positive], ["Most negative", s.negative]]) {
    panel.append(el("h3", {}, title));
    if (!groups.length) panel.append(el("div", { class: "muted" }, "never"));
    for (const g of groups) {
      const box = el("div", { class: "group snippets" });
      const label = g.quantile === 1 ? "the extreme" : `quantile ${g.quantile} of the ${title === "Most positive" ? "positive" : "negative"} values`;
      box.append(el("div", { class: "muted" }, `${label}: ${fmt(g.value)}`));
      for (const ex of g.examples) box.append(tokenLine(ex.tokens, ex.acts, scale, ex.at));
      panel.append(box);
    }
  }
}

if (!nodes.length) {
  panel.replaceChildren(el("p", {}, "This circuit is empty: with every node ablated the model already reaches the " +
    "target loss, so the bigram table and the ablation values do the task on their own."));
}
const wanted = decodeURIComponent(location.hash.slice(1));
if (byId.has(wanted)) select(wanted);
