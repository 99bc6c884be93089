// Per-hook latency as Claude Code pays it, in one Node process (bench/http_hooks.py runs it).
//   node hook_latency.mjs URL BARE_URL COMMAND HTTP_CALLS CMD_CALLS BLOCK WARMUP
// axios:   axios.post as Claude Code posts an http hook (its bundled client: axios 1.15.2 over
//          node:http, Node 20's keep-alive global agent; the same options as Claude Code passes)
// axiosBare: the same axios post to a bare server that answers 204 to anything (its floor here)
// http:    fetch POST, keep-alive (Node's default agent), to hookd's HTTP listener
// bare:    the same fetch to the bare server (fetch's own floor here)
// command: child_process.execSync(COMMAND, {input: payload, shell: "/bin/sh"}), as Claude Code runs
//          a command hook with the payload on stdin
// All alternate in blocks so that all see the same machine. Prints {axios, axiosBare, http, bare,
// command}: µs.
import { execSync } from "node:child_process";
import axios from "axios";

const [url, bareUrl, command, httpCalls, cmdCalls, block, warmup] = process.argv.slice(2);
const payload = (i) =>
  JSON.stringify({
    session_id: "5e7c0c4e-2222-4b1e-9a53-000000000001",
    transcript_path: "/home/dev/.claude/projects/-home-dev-projects-hookd/5e7c0c4e.jsonl",
    cwd: "/home/dev/projects/hookd",
    permission_mode: "default",
    hook_event_name: i % 2 ? "PostToolUse" : "PreToolUse",
    tool_name: "Read",
    tool_input: { file_path: `/home/dev/projects/hookd/daemon/hookd/mod${i % 40}.py` },
    tool_use_id: `toolu_01${String(i).padStart(10, "0")}`,
  });

async function post(target, i) {
  const r = await fetch(target, { method: "POST", headers: { "Content-Type": "application/json" }, body: payload(i) });
  await r.arrayBuffer();
  if (r.status !== 204) throw new Error(`${target}: status ${r.status}`);
}

async function axiosPost(target, i) {
  // Claude Code 2.1.197: mb.post(url, body, {headers, signal, responseType: "text",
  // validateStatus: () => true, maxRedirects: 0, proxy: false, lookup})
  const r = await axios.post(target, payload(i), {
    headers: { "Content-Type": "application/json" },
    responseType: "text",
    validateStatus: () => true,
    maxRedirects: 0,
    proxy: false,
  });
  if (r.status !== 204) throw new Error(`${target}: status ${r.status}`);
}

const now = () => process.hrtime.bigint();
const us = (t0) => Number(now() - t0) / 1000;
const out = { axios: [], axiosBare: [], http: [], bare: [], command: [] };
let i = 0;
for (let w = 0; w < +warmup; w++) {
  await post(url, i++);
  await post(bareUrl, i++);
  await axiosPost(url, i++);
  await axiosPost(bareUrl, i++);
}
for (let w = 0; w < 5; w++) execSync(command, { input: payload(i++), shell: "/bin/sh", stdio: ["pipe", "ignore", "inherit"] });
const cmdEvery = Math.max(1, Math.round(+httpCalls / +cmdCalls));
while (out.http.length < +httpCalls) {
  for (let b = 0; b < +block; b++) {
    let t0 = now();
    await post(url, i++);
    out.http.push(us(t0));
    t0 = now();
    await post(bareUrl, i++);
    out.bare.push(us(t0));
    t0 = now();
    await axiosPost(url, i++);
    out.axios.push(us(t0));
    t0 = now();
    await axiosPost(bareUrl, i++);
    out.axiosBare.push(us(t0));
    if (out.http.length % cmdEvery === 0 && out.command.length < +cmdCalls) {
      t0 = now();
      execSync(command, { input: payload(i++), shell: "/bin/sh", stdio: ["pipe", "ignore", "inherit"] });
      out.command.push(us(t0));
    }
  }
  await new Promise((r) => setTimeout(r, 1)); // a breath between blocks, as hooks come in bursts
}
console.log(JSON.stringify(out));
