/**
 * The UI's one HTML page: a shell whose script (dist/web/ui.js, bundled at `npm run build`) draws the Demo and
 * Runs tabs from the API. Nothing comes from another origin (the CSP says so to the browser).
 */
export const UI_CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const STYLE = `
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:18px;align-items:center;padding:10px 24px;background:#1d2330;color:#fff}header b{font-size:17px}
header a{color:#c9d4e6;text-decoration:none;padding:4px 10px;border-radius:4px}header a.active{background:#3b4a63;color:#fff}
main{max-width:1280px;margin:0 auto;padding:16px 24px 60px}h2{font-size:19px;margin:22px 0 10px}h3{font-size:15px;margin:16px 0 8px}
.muted{color:#667085}.mono,code,pre{font-family:"DejaVu Sans Mono",ui-monospace,monospace;font-size:12px}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #e1e4e8;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f0f2f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}.status-finished,.status-reused{color:#137333}.status-failed,.status-crashed{color:#b3261e}.status-running{color:#1a56db}.status-stopped{color:#9a6700}
form.gen{display:flex;flex-wrap:wrap;gap:10px;align-items:end;background:#fff;border:1px solid #e1e4e8;padding:12px}
form.gen label{display:flex;flex-direction:column;font-size:12px;color:#667085}form.gen input{font:inherit;padding:5px 7px;border:1px solid #c7ccd4;border-radius:4px}
form.gen input[name=prompt]{width:420px}form.gen input[type=number]{width:90px}button{font:inherit;padding:6px 16px;border-radius:4px;border:1px solid #1a56db;background:#1a56db;color:#fff;cursor:pointer}
button:disabled{opacity:.5;cursor:default}button.secondary{background:#fff;color:#1a56db}
.samples{display:flex;flex-wrap:wrap;gap:12px;margin-top:14px}figure{margin:0;background:#fff;border:1px solid #e1e4e8;padding:6px}
figure.best{border-color:#137333;box-shadow:0 0 0 2px #13733344}figcaption{font-size:12px;color:#667085}img.px{image-rendering:pixelated}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:12px}.chart{background:#fff;border:1px solid #e1e4e8;padding:6px;min-height:250px}
.media{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}pre{background:#fff;border:1px solid #e1e4e8;padding:8px;overflow:auto;max-height:480px}
.error{color:#b3261e}details{margin:8px 0}summary{cursor:pointer;color:#1a56db}a{color:#1a56db}
`;

export function uiPage(o: { hasModel: boolean }): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>minidalle</title><link rel="stylesheet" href="/assets/uplot.css"><style>${STYLE}</style></head>
<body data-has-model="${o.hasModel ? '1' : '0'}">
<header><b>minidalle</b><a href="#demo" data-tab="demo">Demo</a><a href="#runs" data-tab="runs">Runs</a><span class="muted" id="status"></span></header>
<main id="app"><p class="muted">loading…</p></main>
<script src="/assets/ui.js"></script>
</body></html>
`;
}
