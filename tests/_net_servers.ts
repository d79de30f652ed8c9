/**
 * Loopback HTTP servers for the network tests and bench: each counts the requests it got, so a
 * test can assert that a refused request reached nothing. All listen on 127.0.0.1, port 0.
 */

/** A server and what it saw. */
export interface TestServer {
  readonly port: number;
  readonly origin: string;
  /** Requests received, in order: method, path, Host header, all headers. */
  readonly seen: { method: string; path: string; host: string; headers: Headers }[];
  close(): Promise<void>;
}

/** Streams `total` bytes in 64 KiB chunks, produced on demand (stops when the reader cancels). */
function bigBody(total: number): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(64 * 1024).fill(0x61);
  let sent = 0;
  return new ReadableStream({
    pull(c) {
      if (sent >= total) return c.close();
      sent += chunk.length;
      c.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
}

/** A byte every `everyMs`, at most `count` of them (a slowloris response). */
function slowBody(everyMs: number, count: number): ReadableStream<Uint8Array> {
  let n = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  return new ReadableStream({
    pull(c) {
      return new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          if (n++ >= count) c.close();
          else c.enqueue(new Uint8Array([0x2e]));
          resolve();
        }, everyMs);
      });
    },
    cancel() {
      clearTimeout(timer);
    },
  }, { highWaterMark: 0 });
}

/**
 * A server with routes: `/big?n=BYTES` (streamed), `/slow` (headers, then a byte per 100 ms, 600
 * bytes), `/slowheaders` (headers after 60 s, or at close), `/redirect?to=URL` (302), `/echo`
 * (JSON of the request), `/bin` (bytes, not UTF-8), `/cookie` (Set-Cookie), anything else "ok".
 */
export function startServer(): TestServer {
  const seen: TestServer["seen"] = [];
  const pending = new Set<() => void>();
  const ac = new AbortController();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: ac.signal,
    onListen() {},
  }, async (req) => {
    const url = new URL(req.url);
    seen.push({
      method: req.method,
      path: url.pathname,
      host: req.headers.get("host") ?? "",
      headers: req.headers,
    });
    switch (url.pathname) {
      case "/big":
        return new Response(bigBody(Number(url.searchParams.get("n") ?? 0)));
      case "/slow":
        return new Response(slowBody(100, 600));
      case "/slowheaders":
        await new Promise<void>((r) => {
          const t = setTimeout(r, 60_000);
          pending.add(() => {
            clearTimeout(t);
            r();
          });
        });
        return new Response("late");
      case "/redirect":
        return new Response(null, {
          status: 302,
          headers: { location: url.searchParams.get("to") ?? "/" },
        });
      case "/bin":
        return new Response(new Uint8Array([0xff, 0, 1, 0xc3, 0xa9]));
      case "/cookie":
        return new Response("c", { headers: { "set-cookie": "sid=1", "x-kept": "yes" } });
      case "/echo": {
        const body = new Uint8Array(await req.arrayBuffer());
        return Response.json({
          method: req.method,
          path: url.pathname + url.search,
          host: req.headers.get("host"),
          headers: [...req.headers],
          body: new TextDecoder().decode(body),
          bodyLength: body.length,
        });
      }
      default:
        return new Response("ok");
    }
  });
  const port = server.addr.port;
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    seen,
    async close() {
      for (const p of pending) p();
      ac.abort();
      await server.finished;
    },
  };
}

/** A plain TCP listener that counts connections (e.g. a fake proxy) and closes each at once. */
export function startCounter(): { port: number; count: () => number; close: () => void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let n = 0;
  (async () => {
    try {
      for await (const conn of listener) {
        n++;
        conn.close();
      }
    } catch {
      // closed
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    count: () => n,
    close: () => listener.close(),
  };
}
