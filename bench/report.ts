/**
 * How runs read: one line per run as it finishes, and Markdown tables of all
 * runs at the end, one per kind (their figures differ), as bench/README.md
 * shows them.
 */
import { describePerUnit } from "./scrape.js";
import { isSkipped, type RunResult, type SkippedRun } from "./runs.js";

function usageText(run: RunResult): string {
  return `server CPU ${run.server?.cpuPercent ?? "?"}% RSS ${run.server?.rssMiBEnd ?? "?"} MiB (peak ${run.server?.rssMiBPeak ?? "?"}), ` +
    `client CPU ${run.client.cpuPercent}%, other ${run.machine.otherPercent}%`;
}

function costText(run: RunResult): string {
  const { storeOps, serverCpuUs } = run.costs;
  const parts: string[] = [];
  if (serverCpuUs) parts.push(`server CPU ${serverCpuUs.value} us per ${serverCpuUs.unit}`);
  const unit = storeOps?.unit ?? { echo: "call", mailbox: "acked job", events: "published event" }[run.kind];
  if (run.system === "mailroom") parts.push(`store operations per ${unit}: ${describePerUnit(storeOps)}`);
  return parts.length === 0 ? "" : `; ${parts.join("; ")}`;
}

function errorText(errors: Record<string, number>): string {
  const entries = Object.entries(errors);
  return entries.length === 0 ? "" : `; ERRORS ${entries.map(([k, v]) => `${k} x${v}`).join(", ")}`;
}

export function describeRun(run: RunResult | SkippedRun): string {
  if (isSkipped(run)) return `${run.name}: SKIPPED (${run.skipped})`;
  const usage = usageText(run);
  const costs = costText(run);
  const prefill = run.prefill ? ` [${run.prefill.enqueued} queued before the load, in ${run.prefill.seconds} s]` : "";
  switch (run.kind) {
    case "echo": {
      const r = run.result;
      return `${run.name}: ${r.callsPerSecond} calls/s, p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms; ${usage}${costs}${errorText(r.errors)}`;
    }
    case "mailbox": {
      const r = run.result;
      return `${run.name}${prefill}: ${r.jobsPerSecond} jobs/s acked, ${r.enqueuePerSecond} enqueued/s, ${r.rpcsPerSecond} RPCs/s; ` +
        `claim p50 ${r.claimMs.p50} p99 ${r.claimMs.p99} max ${r.claimMs.max} ms (${r.emptyClaims} empty, ${r.meanClaimSize} a claim); ` +
        `e2e p50 ${r.endToEndMs.p50} p99 ${r.endToEndMs.p99} ms; ${usage}${costs}${errorText(r.errors)}`;
    }
    case "events": {
      const r = run.result;
      const offered = r.targetPerSecond === undefined ? "" : ` (offered ${r.targetPerSecond}/s)`;
      return `${run.name}: ${r.publishPerSecond} published/s${offered}, ${r.framesPerSecond} frames/s received ` +
        `(${r.framesPerSecondPerSubscriber} per subscriber, ${r.framesPerMessage} a stream message); publish -> receive p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} max ${r.latencyMs.max} ms; ` +
        `Publish RPC p50 ${r.publishRpcMs.p50} p99 ${r.publishRpcMs.p99} ms; undelivered ${r.undelivered} after ${r.drainMs} ms drain, ` +
        `${r.overflowNotices} overflow notices; ${usage}${costs}${errorText(r.errors)}`;
    }
  }
}

/** Markdown tables of the runs, one per kind. */
export function tables(all: Array<RunResult | SkippedRun>): string {
  const runs = all.filter((run): run is RunResult => !isSkipped(run));
  const usageHeader = "server CPU % | server RSS MiB (peak) | client CPU % | other CPU % | server CPU us per unit | store ops per unit";
  const usageAlign = "---: | ---: | ---: | ---: | ---: | ---:";
  const usage = (run: RunResult) =>
    `${run.server?.cpuPercent ?? "?"} | ${run.server?.rssMiBEnd ?? "?"} (${run.server?.rssMiBPeak ?? "?"}) | ${run.client.cpuPercent} | ${run.machine.otherPercent} | ` +
    `${run.costs.serverCpuUs?.value ?? "n/a"} | ${run.costs.storeOps?.total ?? "n/a"}`;
  const echo: string[] = [];
  const mailbox: string[] = [];
  const events: string[] = [];
  for (const run of runs) {
    switch (run.kind) {
      case "echo": {
        const r = run.result;
        echo.push(`| ${run.name} | **${r.callsPerSecond}** | ${r.latencyMs.p50} / ${r.latencyMs.p99} | ${usage(run)} |`);
        break;
      }
      case "mailbox": {
        const r = run.result;
        mailbox.push(`| ${run.name} | **${r.jobsPerSecond}** | ${r.enqueuePerSecond} | ${r.rpcsPerSecond} | ${r.claimMs.p50} / ${r.claimMs.p99} / ${r.claimMs.max} | ${r.endToEndMs.p50} / ${r.endToEndMs.p99} | ${usage(run)} |`);
        break;
      }
      case "events": {
        const r = run.result;
        events.push(`| ${run.name} | ${r.publishPerSecond} | **${r.framesPerSecondPerSubscriber}** | ${r.framesPerSecond} | **${r.latencyMs.p50} / ${r.latencyMs.p99}** / ${r.latencyMs.max} | ${r.undelivered} | ${usage(run)} |`);
        break;
      }
    }
  }
  const out: string[] = [];
  if (echo.length > 0) out.push(["| run | calls/s | call p50 / p99 ms | " + usageHeader + " |", "| --- | ---: | --- | " + usageAlign + " |", ...echo].join("\n"));
  if (mailbox.length > 0) {
    out.push([
      "| run | jobs/s (acked) | enqueued/s | RPCs/s | claim p50 / p99 / max ms | e2e p50 / p99 ms | " + usageHeader + " |",
      "| --- | ---: | ---: | ---: | --- | --- | " + usageAlign + " |",
      ...mailbox,
    ].join("\n"));
  }
  if (events.length > 0) {
    out.push([
      "| run | published/s | frames/s per subscriber | frames/s total | publish -> receive p50 / p99 / max ms | undelivered | " + usageHeader + " |",
      "| --- | ---: | ---: | ---: | --- | ---: | " + usageAlign + " |",
      ...events,
    ].join("\n"));
  }
  return out.join("\n\n");
}
