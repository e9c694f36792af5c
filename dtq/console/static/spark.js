// Throughput per queue: done/min samples from the overview's refreshes, kept in
// this tab only, drawn as an inline SVG line (no library).
const num = (value) => Number(value || 0);
const SAMPLES = 90; // 3 minutes of 2 s refreshes (a render between refreshes adds one too)
const throughput = new Map(); // queue -> done/min samples, oldest first (this tab only)

export function remember(queues) {
  for (const q of queues) {
    const samples = throughput.get(q.queue) || [];
    samples.push(num(q.completed_last_minute));
    if (samples.length > SAMPLES) samples.shift();
    throughput.set(q.queue, samples);
  }
}

// Done/min over the last few minutes as an inline SVG line.
export function sparkline(name) {
  const samples = throughput.get(name) || [];
  const width = 120;
  const height = 24;
  const top = Math.max(1, ...samples);
  // The samples so far span the width (up to SAMPLES: 3 minutes); one is a flat line.
  const step = width / Math.max(samples.length - 1, 1);
  const y = (v) => (height - 1 - (v / top) * (height - 2)).toFixed(1);
  const points = samples.map((v, i) => `${(i * step).toFixed(1)},${y(v)}`);
  if (samples.length === 1) points.push(`${width},${y(samples[0])}`);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  for (const [k, v] of Object.entries({ width, height, viewBox: `0 0 ${width} ${height}`, class: "spark", role: "img" })) {
    svg.setAttribute(k, v);
  }
  svg.setAttribute("aria-label", `${name}: done per minute over the last ${samples.length * 2} s, now ${samples[samples.length - 1] || 0}, peak ${Math.max(0, ...samples)}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  return svg;
}
