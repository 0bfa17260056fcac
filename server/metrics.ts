// Prometheus metrics (prom-client), one registry per server. Labels are low-cardinality and never
// carry an address, a token, a task id or a key: route patterns, outcomes, status codes, key ids.

import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export interface HttpMetrics {
  registry: Registry;
  requests: Counter<"route" | "outcome" | "status">;
  duration: Histogram<"route">;
}

/** Where createMetrics gets its registries: server/cluster.ts swaps this in worker processes so
 *  that /metrics answers with the sum over all workers (prom-client AggregatorRegistry). */
let makeRegistry: (component: string) => Registry = () => new Registry();

export function setRegistryFactory(factory: (component: string) => Registry): void {
  makeRegistry = factory;
}

export function createMetrics(component: string, options: { defaultMetrics?: boolean } = {}): HttpMetrics {
  const registry = makeRegistry(component);
  registry.setDefaultLabels({ component });
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: "veil_" });
  return {
    registry,
    requests: new Counter({
      name: "veil_http_requests_total",
      help: "HTTP requests by route pattern, outcome and status",
      labelNames: ["route", "outcome", "status"],
      registers: [registry],
    }),
    duration: new Histogram({
      name: "veil_http_request_duration_seconds",
      help: "HTTP request latency by route pattern",
      labelNames: ["route"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
  };
}

/**
 * Values made once per key and kept: for metric children (`counter.labels(...)`), since
 * prom-client hashes the label object on every `inc(labels)`, which costs a hot path more than the
 * increment. Keys come from low-cardinality labels only, so the map stays small.
 */
export class ChildCache<K, V> {
  readonly #made = new Map<K, V>();
  readonly #make: (key: K) => V;

  constructor(make: (key: K) => V) {
    this.#make = make;
  }

  get(key: K): V {
    let v = this.#made.get(key);
    if (v === undefined) {
      v = this.#make(key);
      this.#made.set(key, v);
    }
    return v;
  }
}
