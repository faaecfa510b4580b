/**
 * `GET /metrics`: Prometheus metrics through prom-client, on a registry of this server's own (two
 * servers in one process never mix their figures). Names follow vLLM's where one exists.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Live figures read at each scrape. */
export interface MetricSources {
  queue(): { running: number; waiting: number };
  adaptersRunning(): number;
  /** The generation engine's running batch, when the model generates. */
  engine?(): { running: number; waiting: number };
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const TOKEN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export class ServeMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: "peft_http_requests_total", help: "HTTP requests by route, method and status", labelNames: ["route", "method", "status"], registers: [this.registry] });
  readonly latency = new Histogram({ name: "peft_http_request_duration_seconds", help: "HTTP request latency (to the last byte) by route", labelNames: ["route"], buckets: LATENCY_BUCKETS, registers: [this.registry] });
  private sources: MetricSources = { queue: () => ({ running: 0, waiting: 0 }), adaptersRunning: () => 0 };
  readonly queueWaiting = this.gauge("peft_queue_waiting_requests", "requests waiting in the bounded queue", () => this.sources.queue().waiting);
  readonly queueRunning = this.gauge("peft_queue_running_requests", "requests admitted and running", () => this.sources.queue().running);
  readonly rejected = new Counter({ name: "peft_queue_rejected_total", help: "requests refused with 429 because the queue was full", registers: [this.registry] });
  readonly aborted = new Counter({ name: "peft_requests_aborted_total", help: "requests whose client disconnected before the answer was complete", registers: [this.registry] });
  readonly adapterResident = new Gauge({ name: "peft_lora_resident", help: "1 for each adapter resident in host memory (by name)", labelNames: ["adapter"], registers: [this.registry] });
  readonly adaptersRunning = this.gauge("peft_lora_running_adapters", "distinct adapters used by running requests (bounded by --max-loras)", () => this.sources.adaptersRunning());
  readonly adapterLoads = new Counter({ name: "peft_lora_loads_total", help: "adapter folders read into memory", registers: [this.registry] });
  readonly evictions = new Counter({ name: "peft_lora_evictions_total", help: "adapters evicted from host memory (least recently used, beyond --max-cpu-loras)", registers: [this.registry] });
  readonly ttft = new Histogram({ name: "peft_time_to_first_token_seconds", help: "time from admission to the first generated token", buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly itl = new Histogram({ name: "peft_inter_token_latency_seconds", help: "time between consecutive generated tokens of a request", buckets: TOKEN_BUCKETS, registers: [this.registry] });
  readonly tokensPerSecond = new Histogram({ name: "peft_request_tokens_per_second", help: "generated tokens per second of each finished request", buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500], registers: [this.registry] });
  readonly promptTokens = new Counter({ name: "peft_prompt_tokens_total", help: "prompt tokens processed", registers: [this.registry] });
  readonly generationTokens = new Counter({ name: "peft_generation_tokens_total", help: "tokens generated", registers: [this.registry] });
  readonly batchRunning = this.gauge("peft_num_requests_running", "sequences in the generation engine's running batch", () => this.sources.engine?.().running ?? 0);
  readonly batchWaiting = this.gauge("peft_num_requests_waiting", "sequences waiting for a slot in the generation engine", () => this.sources.engine?.().waiting ?? 0);

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: "peft_" });
  }

  private gauge(name: string, help: string, read: () => number): Gauge {
    return new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /** Where the live gauges read their figures. */
  bind(sources: MetricSources): void {
    this.sources = sources;
  }

  async text(): Promise<string> {
    return await this.registry.metrics();
  }
}
