/**
 * The operator view's page: its HTML (with the per-process token that the
 * page's POSTs carry) and its style sheet. The script is in
 * `operator_script.ts`. Nothing is loaded from elsewhere: the page, its
 * script and its style come from the coordinator process, and the plot is an
 * SVG the script draws.
 *
 * @module
 */

/**
 * The page, carrying `token` for the POSTs it sends.
 *
 * @param token The per-process token (hex).
 * @returns The HTML document.
 */
export function pageHtml(token: string): string {
  if (!/^[0-9a-f]+$/.test(token)) throw new TypeError("Invalid token: it is not hex");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="fedcomm-token" content="${token}">
<title>fedcomm operator</title>
<link rel="stylesheet" href="operator.css">
<script src="operator.js" defer></script>
</head>
<body>
<header>
  <h1>fedcomm operator <span id="job"></span></h1>
  <p>state <b id="state">…</b> · round <b id="round">–</b> · <span id="feed">connecting…</span></p>
  <button id="stop" type="button">Stop the job</button>
</header>
<p id="totals"></p>
<p id="status" role="status" aria-live="polite"></p>
<section>
  <h2>Sites <small id="site-count"></small></h2>
  <table id="sites">
    <thead><tr><th>Site</th><th>State</th><th>Id</th><th>Rounds</th><th>Late</th>
      <th>Failures</th><th>In</th><th>Out</th><th>Last seen</th><th></th></tr></thead>
    <tbody></tbody>
  </table>
</section>
<section>
  <h2>Progress</h2>
  <div class="plots">
    <figure><figcaption>Round time (ms)</figcaption>
      <svg id="plot-time" viewBox="0 0 480 180" role="img" aria-label="Round time"></svg></figure>
    <figure><figcaption><label>Metric <select id="metric"></select></label></figcaption>
      <svg id="plot-metric" viewBox="0 0 480 180" role="img" aria-label="Metric"></svg></figure>
  </div>
</section>
<section>
  <h2>Rounds</h2>
  <table id="rounds">
    <thead><tr><th>Round</th><th>Kind</th><th>Sampled</th><th>Answered</th><th>Late</th>
      <th>Missing</th><th>Failed</th><th>Time</th><th>Metrics</th></tr></thead>
    <tbody></tbody>
  </table>
</section>
</body>
</html>
`;
}

/** The page's style sheet. */
export const PAGE_CSS = `:root { color-scheme: light dark; font: 14px/1.4 system-ui, sans-serif; }
body { margin: 1rem 2rem; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 0 1.5rem; }
h1 { font-size: 1.3rem; margin: 0.2rem 0; }
h2 { font-size: 1.05rem; margin: 1.2rem 0 0.4rem; }
#job { font-weight: normal; opacity: 0.8; }
#totals { margin: 0.2rem 0; opacity: 0.8; }
#status { min-height: 1.4em; margin: 0.3rem 0; }
#status.error { color: #c0392b; }
table { border-collapse: collapse; }
th, td { padding: 0.15rem 0.6rem; text-align: right; border-bottom: 1px solid #8884; }
th:first-child, td:first-child, td.text { text-align: left; }
td.state-gone { opacity: 0.55; }
td.state-training { color: #2471a3; }
td.state-resuming { color: #b9770e; }
button { cursor: pointer; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; }
svg { width: 480px; height: 180px; border: 1px solid #8884; }
svg .axis { stroke: currentColor; stroke-opacity: 0.5; }
svg .line { fill: none; stroke: #2471a3; stroke-width: 2; }
svg .dot { fill: #2471a3; }
svg text { fill: currentColor; font-size: 11px; }
`;
