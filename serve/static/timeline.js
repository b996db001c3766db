// A run's timeline as SVG, drawn from its events (serde JSON, seq order).
// Bars: node_entered -> node_exited/node_failed (one per node_entered), tool_called ->
// tool_returned/tool_failed (matched per tool name, first in first out). Marks: retries,
// interrupts, checkpoints. Lanes: the run, then each node, then each tool, in order of
// first appearance. Times are nanoseconds relative to the first event.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// RFC 3339 with up to 9 fraction digits -> [whole milliseconds of the second, nanoseconds within it].
function parseTime(text) {
  const m = /^(.*?:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)$/.exec(text);
  if (!m) return [Date.parse(text), 0];
  const fraction = (m[2] || "").padEnd(9, "0").slice(0, 9);
  return [Date.parse(m[1] + m[3]), Number(fraction)];
}

function relativeNs(base, t) {
  return (t[0] - base[0]) * 1e6 + (t[1] - base[1]);
}

function formatNs(ns) {
  if (ns >= 1e9) return (ns / 1e9).toFixed(ns >= 1e10 ? 1 : 2) + " s";
  if (ns >= 1e6) return (ns / 1e6).toFixed(ns >= 1e7 ? 1 : 2) + " ms";
  return (ns / 1e3).toFixed(0) + " µs";
}

// The bars and marks of a run, independent of drawing.
function timelineModel(events) {
  const lanes = ["run"];
  const lane = (name) => {
    let i = lanes.indexOf(name);
    if (i < 0) { lanes.push(name); i = lanes.length - 1; }
    return i;
  };
  const bars = [];
  const marks = [];
  if (!events.length) return { lanes, bars, marks, end: 0 };
  const base = parseTime(events[0].timestamp);
  const openNodes = new Map();   // node_id -> [bar]
  const openTools = new Map();   // tool_name -> [bar]
  let end = 0;
  const open = (map, key, bar) => {
    if (!map.has(key)) map.set(key, []);
    map.get(key).push(bar);
    bars.push(bar);
  };
  const close = (map, key, at, seq, failed) => {
    const list = map.get(key);
    const bar = list && list.shift();
    if (!bar) return;
    bar.end = at; bar.endSeq = seq; bar.failed = failed;
  };
  for (const e of events) {
    const at = relativeNs(base, parseTime(e.timestamp));
    end = Math.max(end, at);
    const k = e.kind;
    switch (k.type) {
      case "node_entered":
        open(openNodes, k.node_id, { kind: "node", name: k.node_id, lane: lane("node " + k.node_id),
          start: at, startSeq: e.seq, end: null, iteration: k.iteration });
        break;
      case "node_exited": close(openNodes, k.node_id, at, e.seq, false); break;
      case "node_failed": close(openNodes, k.node_id, at, e.seq, true); break;
      case "tool_called":
        open(openTools, k.tool_name, { kind: "tool", name: k.tool_name, lane: lane("tool " + k.tool_name),
          start: at, startSeq: e.seq, end: null });
        break;
      case "tool_returned": close(openTools, k.tool_name, at, e.seq, false); break;
      case "tool_failed": close(openTools, k.tool_name, at, e.seq, true); break;
      case "node_retrying":
        marks.push({ kind: "retry", at, seq: e.seq, lane: lane("node " + k.node_id),
          text: `retry ${k.node_id} (attempt ${k.attempt}, delay ${k.delay_ms} ms)` });
        break;
      case "graph_interrupted":
        marks.push({ kind: "interrupt", at, seq: e.seq, lane: 0, text: `interrupted: ${k.reason}` });
        break;
      case "checkpoint_saved": case "checkpoint_restored": case "checkpoint_deleted":
        marks.push({ kind: "checkpoint", at, seq: e.seq, lane: 0,
          text: `${k.type.replace("_", " ")} ${k.checkpoint_id}` });
        break;
      case "graph_started": case "graph_completed": case "graph_failed":
        marks.push({ kind: k.type, at, seq: e.seq, lane: 0, text: k.type.replace("_", " ") });
        break;
      default: break;
    }
  }
  return { lanes, bars, marks, end };
}

function svgEl(tag, attrs, title) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (title) {
    const t = document.createElementNS(SVG_NS, "title");
    t.textContent = title;
    node.appendChild(t);
  }
  return node;
}

function drawTimeline(container, events, width) {
  const model = timelineModel(events);
  const labelWidth = 150, laneHeight = 22, top = 24;
  const plot = Math.max(200, width - labelWidth - 20);
  const span = model.end || 1;
  const x = (ns) => labelWidth + (ns / span) * plot;
  const height = top + model.lanes.length * laneHeight + 10;
  const svg = svgEl("svg", { width: labelWidth + plot + 20, height, class: "timeline",
    role: "img", "aria-label": `timeline of ${events.length} events` });
  for (let i = 0; i <= 5; i++) {
    const ns = (span * i) / 5;
    svg.appendChild(svgEl("line", { x1: x(ns), x2: x(ns), y1: top - 6, y2: height - 6, class: "tick" }));
    const anchor = i === 0 ? "start" : i === 5 ? "end" : "middle";
    const label = svgEl("text", { x: x(ns), y: 12, class: "axis", "text-anchor": anchor });
    label.textContent = formatNs(ns);
    svg.appendChild(label);
  }
  model.lanes.forEach((name, i) => {
    const y = top + i * laneHeight;
    if (i % 2) svg.appendChild(svgEl("rect", { x: 0, y, width: labelWidth + plot + 20, height: laneHeight, class: "stripe" }));
    const label = svgEl("text", { x: 4, y: y + 15, class: "lane" });
    label.textContent = name.length > 22 ? name.slice(0, 21) + "…" : name;
    svg.appendChild(label);
  });
  for (const bar of model.bars) {
    const y = top + bar.lane * laneHeight + 4;
    const stop = bar.end === null ? model.end : bar.end;
    const state = bar.end === null ? "open" : bar.failed ? "failed" : "done";
    const title = `${bar.kind} ${bar.name}` + (bar.iteration ? ` (iteration ${bar.iteration})` : "") +
      `: ${bar.end === null ? "not ended" : formatNs(stop - bar.start)}` +
      `, seq ${bar.startSeq}${bar.endSeq ? "–" + bar.endSeq : ""}` + (bar.failed ? ", failed" : "");
    svg.appendChild(svgEl("rect", {
      x: x(bar.start), y, width: Math.max(2, x(stop) - x(bar.start)), height: laneHeight - 8, rx: 2,
      class: `bar bar-${bar.kind} ${state}`, "data-name": bar.name, "data-seq": bar.startSeq,
    }, title));
  }
  for (const mark of model.marks) {
    const cx = x(mark.at), cy = top + mark.lane * laneHeight + laneHeight / 2;
    let shape;
    if (mark.kind === "retry") {
      shape = svgEl("polygon", { points: `${cx},${cy - 6} ${cx + 6},${cy} ${cx},${cy + 6} ${cx - 6},${cy}` }, mark.text);
    } else if (mark.kind === "interrupt") {
      shape = svgEl("polygon", { points: `${cx - 6},${cy - 6} ${cx + 6},${cy - 6} ${cx},${cy + 5}` }, mark.text);
    } else {
      shape = svgEl("circle", { cx, cy, r: mark.kind === "checkpoint" ? 5 : 3 }, mark.text);
    }
    shape.setAttribute("class", `mark mark-${mark.kind}`);
    shape.setAttribute("data-seq", mark.seq);
    svg.appendChild(shape);
  }
  container.replaceChildren(svg);
  return model;
}

window.runfoldTimeline = { drawTimeline, timelineModel, parseTime };
