// Validate Prometheus Operator objects (ServiceMonitor, PodMonitor, PrometheusRule) against the
// schemas bundled in @kubernetes-models/prometheus-operator. Input: a JSON array of objects on stdin.
// Output: one JSON line per object: {"kind", "name", "ok", "error"}.
import { PodMonitor, PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = { PodMonitor, PrometheusRule, ServiceMonitor };
let input = "";
for await (const chunk of process.stdin) input += chunk;
for (const obj of JSON.parse(input)) {
  const Model = models[obj.kind];
  const row = { kind: obj.kind, name: obj.metadata?.name };
  if (!Model || obj.apiVersion !== "monitoring.coreos.com/v1") {
    console.log(JSON.stringify({ ...row, ok: false, error: "no schema for " + obj.apiVersion + "/" + obj.kind }));
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(JSON.stringify({ ...row, ok: true }));
  } catch (e) {
    console.log(JSON.stringify({ ...row, ok: false, error: String(e.message || e).slice(0, 500) }));
  }
}
