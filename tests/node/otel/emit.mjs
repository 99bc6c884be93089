// Claude-Code-shaped log records exported to hookd by the OpenTelemetry JS SDK (the one Claude
// Code uses), over OTLP/HTTP in JSON or protobuf. tests/test_otlp_node.py runs it:
//
//   node emit.mjs URL json|proto SESSION COUNT
//
// URL "-": the exporter's own default, from OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/logs), as the
// environment that `hookd hooks install-claude --telemetry` writes gives Claude Code.
//
// COUNT api_request records (cost_usd 0.25 + i/1000, input_tokens 100 + i, a double and ints as
// Claude Code sends them) and one tool_result (its duration_ms and success as strings), in
// batches of up to 512; prints {"ok":true} once the exporter reports every export a success.
import { resourceFromAttributes } from '@opentelemetry/resources';
import { LoggerProvider, BatchLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { OTLPLogExporter as JsonExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPLogExporter as ProtoExporter } from '@opentelemetry/exporter-logs-otlp-proto';

const [url, format, session, countText] = process.argv.slice(2);
const count = Number(countText);
const Exporter = format === 'json' ? JsonExporter : ProtoExporter;
const exporter = new Exporter(url === '-' ? { timeoutMillis: 10000 } : { url, timeoutMillis: 10000 });
const failures = [];
const realExport = exporter.export.bind(exporter);
exporter.export = (records, done) => realExport(records, (result) => {
  if (result.code !== 0) failures.push(String(result.error));
  done(result);
});
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': 'claude-code', 'service.version': '2.1.197', 'os.type': 'linux' }),
  processors: [new BatchLogRecordProcessor({ exporter, maxExportBatchSize: 512, maxQueueSize: 4096, scheduledDelayMillis: 50 })],
});
const logger = provider.getLogger('com.anthropic.claude_code.events', '2.1.197');
const common = (i, name) => ({
  'event.name': name, 'event.timestamp': new Date().toISOString(), 'event.sequence': i,
  'session.id': session, 'prompt.id': `${session}-prompt-${i % 3}`, 'terminal.type': 'xterm-256color',
});
for (let i = 0; i < count; i++) {
  logger.emit({
    body: 'claude_code.api_request',
    attributes: {
      ...common(i, 'api_request'), model: i % 2 ? 'claude-haiku-4-5' : 'claude-sonnet-4-5',
      cost_usd: 0.25 + i / 1000, duration_ms: 800 + i, input_tokens: 100 + i, output_tokens: 20,
      cache_read_tokens: 1000, cache_creation_tokens: 5, request_id: `req_${format}_${i}`,
    },
  });
}
logger.emit({
  body: 'claude_code.tool_result',
  attributes: { ...common(count, 'tool_result'), tool_name: 'Read', tool_use_id: `toolu_${format}`,
    success: 'true', duration_ms: '12' },
});
await provider.forceFlush();
await provider.shutdown();
console.log(JSON.stringify(failures.length ? { ok: false, failures } : { ok: true }));
process.exit(failures.length ? 1 : 0);
