/**
 * The server's own instruments and their Prometheus text exposition (format 0.0.4) for
 * `/metrics`. The library's OpenTelemetry instruments (src/telemetry.ts) report to whatever
 * provider the application registers and cannot be read back, so the server counts here what it
 * serves: requests by route and status, their durations, requests in flight, guest errors by
 * class, pool members, replacements, readiness and the process's memory (docs/serve.md,
 * "Metrics").
 *
 * @module
 */

/** Upper bounds of the duration histogram's buckets, in seconds. */
export const DURATION_BUCKETS = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) =>
    `${k}="${v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n")}"`
  );
  return parts.length ? `{${parts.join(",")}}` : "";
}

interface Hist {
  counts: number[];
  sum: number;
  count: number;
}

/** A gauge (or a counter kept elsewhere) read when `/metrics` is scraped. */
export interface GaugeSource {
  /** Metric name (a counter's ends in `_total`). */
  name: string;
  /** `gauge` (default) or `counter`. */
  type?: "gauge" | "counter";
  /** Help text. */
  help: string;
  /** Current samples: labels and value. */
  read(): { labels: Record<string, string>; value: number }[];
}

/** The server's counters and histograms. */
export class ServeMetrics {
  readonly #requests = new Map<string, { l: Record<string, string>; n: number }>();
  readonly #errors = new Map<string, { l: Record<string, string>; n: number }>();
  readonly #durations = new Map<string, Hist>();
  readonly #gauges: GaugeSource[] = [];
  /** Requests being answered now. */
  inFlight = 0;

  /** Adds a gauge read at each scrape. */
  gauge(g: GaugeSource): void {
    this.#gauges.push(g);
  }

  /** Counts a finished request. */
  request(route: string, method: string, status: number, seconds: number): void {
    // Method and status hold no space, so the route last makes the key unambiguous (and the
    // labels object is made once per series, not per request).
    const key = `${method} ${status} ${route}`;
    const c = this.#requests.get(key);
    if (c) c.n++;
    else this.#requests.set(key, { l: { route, method, code: String(status) }, n: 1 });
    let h = this.#durations.get(route);
    if (!h) {
      h = { counts: DURATION_BUCKETS.map(() => 0), sum: 0, count: 0 };
      this.#durations.set(route, h);
    }
    for (let i = 0; i < DURATION_BUCKETS.length; i++) {
      if (seconds <= DURATION_BUCKETS[i]) h.counts[i]++;
    }
    h.sum += seconds;
    h.count++;
  }

  /** Counts a guest error by its class name. */
  guestError(route: string, error: string): void {
    const l = { route, error };
    const key = JSON.stringify(l);
    const c = this.#errors.get(key);
    if (c) c.n++;
    else this.#errors.set(key, { l, n: 1 });
  }

  /** The Prometheus text exposition of every instrument. */
  text(): string {
    const out: string[] = [];
    out.push("# HELP hl_serve_requests_total Requests answered, by route, method and status.");
    out.push("# TYPE hl_serve_requests_total counter");
    for (const { l, n } of this.#requests.values()) {
      out.push(`hl_serve_requests_total${labels(l)} ${n}`);
    }
    out.push("# HELP hl_serve_request_duration_seconds Time to answer a request, by route.");
    out.push("# TYPE hl_serve_request_duration_seconds histogram");
    for (const [route, h] of this.#durations) {
      DURATION_BUCKETS.forEach((b, i) =>
        out.push(
          `hl_serve_request_duration_seconds_bucket${labels({ route, le: String(b) })} ${
            h.counts[i]
          }`,
        )
      );
      out.push(
        `hl_serve_request_duration_seconds_bucket${labels({ route, le: "+Inf" })} ${h.count}`,
      );
      out.push(`hl_serve_request_duration_seconds_sum${labels({ route })} ${h.sum}`);
      out.push(`hl_serve_request_duration_seconds_count${labels({ route })} ${h.count}`);
    }
    out.push("# HELP hl_serve_guest_errors_total Guest failures, by route and error class.");
    out.push("# TYPE hl_serve_guest_errors_total counter");
    for (const { l, n } of this.#errors.values()) {
      out.push(`hl_serve_guest_errors_total${labels(l)} ${n}`);
    }
    out.push("# HELP hl_serve_requests_in_flight Requests being answered now.");
    out.push("# TYPE hl_serve_requests_in_flight gauge");
    out.push(`hl_serve_requests_in_flight ${this.inFlight}`);
    for (const g of this.#gauges) {
      out.push(`# HELP ${g.name} ${g.help}`);
      out.push(`# TYPE ${g.name} ${g.type ?? "gauge"}`);
      for (const s of g.read()) out.push(`${g.name}${labels(s.labels)} ${s.value}`);
    }
    return out.join("\n") + "\n";
  }
}

/** This process's resident set size and its peak (Linux `VmRSS`, `VmHWM`), in bytes. */
export function processMemory(): { rss?: number; peak?: number } {
  try {
    const s = Deno.readTextFileSync("/proc/self/status");
    const kb = (k: string) => {
      const m = new RegExp(`${k}:\\s+(\\d+) kB`).exec(s);
      return m ? Number(m[1]) * 1024 : undefined;
    };
    return { rss: kb("VmRSS"), peak: kb("VmHWM") };
  } catch {
    return {};
  }
}
