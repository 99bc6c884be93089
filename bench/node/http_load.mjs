// One sustained HTTP client (bench/http_hooks.py starts several): keep-alive POSTs.
//   node http_load.mjs URL EVENTS PER_REQUEST [fetch|axios]
// axios: as Claude Code posts its http hooks (axios over node:http, keep-alive global agent).
// PER_REQUEST 1: one JSON event per request (application/json, as Claude Code sends);
// more: NDJSON bodies of that many events. Warms up, prints "ready", waits for a line on
// stdin, sends, prints "done".
import { createInterface } from "node:readline";
import axios from "axios";

const [url, events, perRequest] = [process.argv[2], +process.argv[3], +process.argv[4]];
const client = process.argv[5] || "fetch";
const k = process.pid;
const event = (i) =>
  JSON.stringify({
    hook_event_name: i % 2 ? "PostToolUse" : "PreToolUse",
    session_id: `5e7c0c4e-${k}-4b1e-9a53-${String(Math.floor(i / 500)).padStart(12, "0")}`,
    cwd: "/home/dev/projects/hookd",
    tool_name: ["Read", "Edit", "Bash", "Grep", "Write"][i % 5],
    tool_use_id: `toolu_01${k}${String(i).padStart(10, "0")}`,
    tool_input: { file_path: `/home/dev/projects/hookd/daemon/hookd/mod${i % 40}.py` },
    tool_response: { success: true, lines: i % 300 },
  });
const ctype = perRequest > 1 ? "application/x-ndjson" : "application/json";
const body = (i) =>
  perRequest > 1 ? Array.from({ length: perRequest }, (_, j) => event(i + j) + "\n").join("") : event(i);

async function axiosPost(i) {
  const r = await axios.post(url, body(i), {
    headers: { "Content-Type": ctype },
    responseType: "text",
    validateStatus: () => true,
    maxRedirects: 0,
    proxy: false,
  });
  if (r.status !== 204) throw new Error(`status ${r.status}`);
}

async function post(i) {
  if (client === "axios") return axiosPost(i);
  const r = await fetch(url, { method: "POST", headers: { "Content-Type": ctype }, body: body(i) });
  await r.arrayBuffer();
  if (r.status !== 204) throw new Error(`status ${r.status}`);
}

for (let i = 0; i < 50; i++) await post(-1000000 - i * perRequest);
console.log("ready");
const rl = createInterface({ input: process.stdin });
await new Promise((r) => rl.once("line", r));
rl.close();
for (let i = 0; i < events; i += perRequest) await post(i);
console.log("done");
