/*
 * The project's driver for QuickJS-NG as a wasm32-wasi reactor (docs/js.md, "Engine and driver
 * ABI"). Built by tools/build_quickjs.sh into target/runtimes/quickjs.wasm.
 *
 * It is one translation unit with QuickJS's own quickjs.c (included below, unmodified) because
 * two settings the driver must make are not in QuickJS's public API on WASI:
 *   - the stack limit: `JS_SetMaxStackSize` sets no limit when `__wasi__` is defined
 *     (quickjs.c `update_stack_limit`), so deep recursion would run the shadow stack into the
 *     data below it (or trap with --stack-first). The driver sets `rt->stack_limit` itself.
 *   - the `Math.random` seed: QuickJS seeds `ctx->random_state` from the clock; the driver sets it
 *     from the host, so a snapshot's copies can be re-seeded per run.
 * and one it must notice: an out-of-memory error that QuickJS could not allocate (below).
 *
 * Every export that takes bytes follows WasmSandbox's bytes convention (docs/wasm.md): the host
 * puts the input in memory from `alloc`, the export owns (and frees) it, and returns
 * `ptr << 32 | len` of a UTF-8 JSON reply that the host hands back to `dealloc`.
 */
#include <stdarg.h>
#include <stdio.h>

/* When QuickJS runs out of memory it makes an InternalError "out of memory"; when even that error
 * cannot be allocated (the limit hit with less than an error object's size left), it throws `null`
 * instead (quickjs.c `JS_ThrowError2`), and which of the two happens depends on where the limit
 * falls. Every error QuickJS makes formats its message with `vsnprintf` first, so the calls in
 * quickjs.c go through this hook, which notes one made while `rt->in_out_of_memory` is set; a
 * `null` thrown out of such a call is reported as the out-of-memory error it stands for. */
static int drv_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
#define vsnprintf drv_vsnprintf
#include "quickjs.c"
#undef vsnprintf

/* Reply kinds, the `kind` argument of the prelude's `envelope`. */
enum { REPLY_VALUE = 0, REPLY_ERROR = 1, REPLY_PENDING = 2, REPLY_STALLED = 3 };

static JSRuntime *drv_rt;
static JSContext *drv_ctx;
/* An out-of-memory error was being made since the current export began (drv_vsnprintf). */
static bool drv_oom_seen;

static int drv_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
  if (drv_rt && drv_rt->in_out_of_memory) drv_oom_seen = true;
  return vsnprintf(buf, size, fmt, ap);
}
/* The prelude's internal object (not reachable from scripts). */
static JSValue drv_obj;
/* The promise of a call that waits on host functions (qjs_resume continues it). */
static JSValue drv_waiting;
/* The module's linear-memory C stack (`-z stack-size`, linked first in memory), passed by
 * tools/build_quickjs.sh so the two cannot disagree. */
#ifndef DRV_LINKED_STACK
#error "build with -DDRV_LINKED_STACK=<the -z stack-size in bytes> (tools/build_quickjs.sh)"
#endif
/* What JavaScript may never have of it: room for the driver, libc and the error QuickJS builds
 * when it hits the limit. */
#define DRV_STACK_RESERVE (128 * 1024)
#define DRV_STACK_MIN (16 * 1024)
#define DRV_STACK_MAX (DRV_LINKED_STACK - DRV_STACK_RESERVE)
/* Bytes of linear-memory stack QuickJS may use below the export's own frame (`stackLimit`,
 * DRV_STACK_MIN to DRV_STACK_MAX). The engine's own stack must outlast it: QuickJS's recursion in
 * C over nested data (its parser, JSON.parse/stringify) takes up to 13.5 bytes of wasmtime stack,
 * 9 bytes of wasmi value stack and 0.1 wasmi frames per byte of this stack, so the default,
 * 512 KiB (about 1,500 frames of a simple recursive JS function), stops with a RangeError at
 * under half of the guests' default limits (docs/js.md, "Limits"). */
static size_t drv_stack_size = 512 * 1024;

/* Replies used when no reply can be built (no memory); never freed. */
static const char REPLY_NO_MEMORY[] =
    "{\"error\":{\"name\":\"InternalError\",\"message\":\"out of memory\",\"stack\":\"\"}}";
static const char REPLY_NOT_INIT[] =
    "{\"error\":{\"name\":\"InternalError\",\"message\":\"qjs_init has not succeeded\","
    "\"stack\":\"\"}}";

static uint64_t pack(const char *ptr, size_t len) {
  return ((uint64_t)(uintptr_t)ptr << 32) | (uint64_t)(uint32_t)len;
}

static uint64_t static_reply(const char *text) { return pack(text, strlen(text)); }

__attribute__((export_name("alloc"))) void *drv_alloc(uint32_t len) {
  return malloc(len ? len : 1);
}

__attribute__((export_name("dealloc"))) void drv_dealloc(void *ptr, uint32_t len) {
  (void)len;
  if (ptr == REPLY_NO_MEMORY || ptr == REPLY_NOT_INIT) return;
  free(ptr);
}

/* Makes the input NUL-terminated (QuickJS's parsers need it); takes ownership of `ptr`. */
static char *terminate(char *ptr, uint32_t len) {
  char *s = realloc(ptr, (size_t)len + 1);
  if (!s) {
    free(ptr);
    return NULL;
  }
  s[len] = '\0';
  return s;
}

/* Called at the start of every export that runs JavaScript: the stack limit is measured from
 * this frame (the host's call is the bottom of the Wasm stack). */
static void enter(void) {
  drv_oom_seen = false;
  drv_rt->stack_top = js_get_stack_pointer();
  drv_rt->stack_limit = drv_rt->stack_top - drv_stack_size;
}

static JSValue drv_method(const char *name, int argc, JSValueConst *argv) {
  JSValue fn = JS_GetPropertyStr(drv_ctx, drv_obj, name);
  if (JS_IsException(fn)) return fn;
  JSValue r = JS_Call(drv_ctx, fn, drv_obj, argc, argv);
  JS_FreeValue(drv_ctx, fn);
  return r;
}

/* Copies a JS string into a fresh buffer and packs it; a static reply when memory runs out. */
static uint64_t string_reply(JSValue text) {
  size_t len;
  const char *s = JS_ToCStringLen(drv_ctx, &len, text);
  JS_FreeValue(drv_ctx, text);
  if (!s) {
    JS_FreeValue(drv_ctx, JS_GetException(drv_ctx));
    return static_reply(REPLY_NO_MEMORY);
  }
  char *out = malloc(len ? len : 1);
  if (!out) {
    JS_FreeCString(drv_ctx, s);
    return static_reply(REPLY_NO_MEMORY);
  }
  memcpy(out, s, len);
  JS_FreeCString(drv_ctx, s);
  return pack(out, len);
}

/* The reply of `kind` for `value` (consumed), as the prelude's envelope writes it. */
static uint64_t envelope(int kind, JSValue value) {
  if (kind == REPLY_ERROR && drv_oom_seen && JS_IsNull(value)) {
    /* The `null` QuickJS threw for an out-of-memory error it could not allocate; the memory is
     * free again now that the call has unwound. (A script that caught that error and threw
     * `null` itself in the same call is reported the same way.) */
    JS_ThrowInternalError(drv_ctx, "out of memory");
    value = JS_GetException(drv_ctx);
  }
  JSValue args[2] = {JS_NewInt32(drv_ctx, kind), value};
  JSValue text = drv_method("envelope", 2, args);
  JS_FreeValue(drv_ctx, value);
  if (JS_IsException(text)) {
    /* The value could not be written (e.g. a BigInt, a cycle, or no memory): report that. */
    args[0] = JS_NewInt32(drv_ctx, REPLY_ERROR);
    args[1] = JS_GetException(drv_ctx);
    text = drv_method("envelope", 2, args);
    JS_FreeValue(drv_ctx, args[1]);
    if (JS_IsException(text)) {
      JS_FreeValue(drv_ctx, JS_GetException(drv_ctx));
      return static_reply(REPLY_NO_MEMORY);
    }
  }
  return string_reply(text);
}

/* Runs the job queue to completion; on an exception in a job returns it (owned), else
 * JS_UNINITIALIZED. */
static JSValue run_jobs(void) {
  for (;;) {
    JSContext *c;
    int r = JS_ExecutePendingJob(drv_rt, &c);
    if (r == 0) return JS_UNINITIALIZED;
    if (r < 0) return JS_GetException(c);
  }
}

/* Finishes a top-level evaluation or call whose result is `v` (consumed): runs the jobs, then
 * replies with the value, the error, the settled value of a Promise, or the pending host calls. */
static uint64_t finish(JSValue v) {
  if (JS_IsException(v)) return envelope(REPLY_ERROR, JS_GetException(drv_ctx));
  JSValue job_error = run_jobs();
  if (!JS_IsUninitialized(job_error)) {
    JS_FreeValue(drv_ctx, v);
    return envelope(REPLY_ERROR, job_error);
  }
  if (!JS_IsPromise(v)) return envelope(REPLY_VALUE, v);
  JSValue result;
  switch (JS_PromiseState(drv_ctx, v)) {
  case JS_PROMISE_FULFILLED:
    result = JS_PromiseResult(drv_ctx, v);
    JS_FreeValue(drv_ctx, v);
    return envelope(REPLY_VALUE, result);
  case JS_PROMISE_REJECTED:
    result = JS_PromiseResult(drv_ctx, v);
    JS_FreeValue(drv_ctx, v);
    return envelope(REPLY_ERROR, result);
  default: {
    JSValue outbox = drv_method("take", 0, NULL);
    if (JS_IsException(outbox)) {
      JS_FreeValue(drv_ctx, v);
      return envelope(REPLY_ERROR, JS_GetException(drv_ctx));
    }
    int64_t n = 0;
    JS_GetLength(drv_ctx, outbox, &n);
    if (n == 0) {
      /* Nothing the promise waits for is outside: it can never settle. */
      JS_FreeValue(drv_ctx, v);
      JS_FreeValue(drv_ctx, outbox);
      return envelope(REPLY_STALLED, JS_UNDEFINED);
    }
    drv_waiting = v;
    return envelope(REPLY_PENDING, outbox);
  }
  }
}

/* Forgets a call that waited on host functions (a new call starts). */
static void abandon(void) {
  JS_FreeValue(drv_ctx, drv_waiting);
  drv_waiting = JS_UNDEFINED;
  JS_FreeValue(drv_ctx, drv_method("reset", 0, NULL));
}

/* console output: __drv_print(fd, text) writes text and a newline to WASI fd 1 or 2. */
static JSValue js_print(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv) {
  (void)this_val;
  int32_t fd = 1;
  if (argc < 2 || JS_ToInt32(ctx, &fd, argv[0]) < 0) return JS_EXCEPTION;
  size_t len;
  const char *s = JS_ToCStringLen(ctx, &len, argv[1]);
  if (!s) return JS_EXCEPTION;
  FILE *f = fd == 2 ? stderr : stdout;
  fwrite(s, 1, len, f);
  fputc('\n', f);
  fflush(f);
  JS_FreeCString(ctx, s);
  return JS_UNDEFINED;
}

/* The driver's JavaScript: console, the `host` object, the reply envelope and the value encoding
 * (JSON, with a Uint8Array as {"$bytes": base64} and a user object whose only key is "$bytes" or
 * "$escape" wrapped as {"$escape": object}; docs/js.md "Values"). A function of the print
 * function, the host function names and the (frozen) JSON functions; returns the internal
 * object. Scripts can replace globals, but not what this closure captured. */
static const char PRELUDE[] =
    "(function (print, names, stringify, parse) {\n"
    "  'use strict';\n"
    "  const S = String, isArray = Array.isArray, Err = Error, U8 = Uint8Array, keys = Object.keys;\n"
    "  const toB64 = U8.prototype.toBase64, fromB64 = U8.fromBase64, define = Object.defineProperty;\n"
    "  const wrappers = new WeakSet(), wsHas = WeakSet.prototype.has, wsAdd = WeakSet.prototype.add;\n"
    "  const tagLike = (v) => { if (isArray(v)) return false; const k = keys(v); return k.length === 1 && (k[0] === '$bytes' || k[0] === '$escape'); };\n"
    "  const replacer = function (k, v) {\n"
    "    if (typeof v !== 'object' || v === null || wsHas.call(wrappers, this)) return v;\n"
    "    if (v instanceof U8) return { $bytes: toB64.call(v) };\n"
    "    if (!tagLike(v)) return v;\n"
    "    const w = { $escape: v };\n"
    "    wsAdd.call(wrappers, w);\n"
    "    return w;\n"
    "  };\n"
    "  // The replacer costs a call per value: a reply is first written without it, and again with it\n"
    "  // only when it held a Uint8Array (seen by the toJSON below) or a key starting with '$'.\n"
    "  let encoding = false, sawBytes = false;\n"
    "  define(U8.prototype, 'toJSON', { value: function toJSON() { if (encoding) sawBytes = true; return this; },\n"
    "    writable: true, enumerable: false, configurable: true });\n"
    "  const write = (v) => {\n"
    "    let text;\n"
    "    encoding = true; sawBytes = false;\n"
    "    try { text = stringify(v); } finally { encoding = false; }\n"
    "    return sawBytes || text.includes('\"$') ? stringify(v, replacer) : text;\n"
    "  };\n"
    "  const revive = (v) => {\n"
    "    if (typeof v !== 'object' || v === null) return v;\n"
    "    if (isArray(v)) { for (let i = 0; i < v.length; i++) v[i] = revive(v[i]); return v; }\n"
    "    const k = keys(v);\n"
    "    if (k.length === 1 && k[0] === '$bytes' && typeof v.$bytes === 'string') return fromB64(v.$bytes);\n"
    "    if (k.length === 1 && k[0] === '$escape' && v.$escape !== null && typeof v.$escape === 'object' && !isArray(v.$escape)) v = v.$escape;\n"
    "    for (const p of keys(v)) { const o = v[p], r = revive(o); if (r !== o) define(v, p, { value: r, writable: true, enumerable: true, configurable: true }); }\n"
    "    return v;\n"
    "  };\n"
    "  const read = (text) => { const v = parse(text); return text.includes('\"$') ? revive(v) : v; };\n"
    "  const waiters = new Map();\n"
    "  let outbox = [], next = 1;\n"
    "  const show = (a) => {\n"
    "    if (typeof a === 'string') return a;\n"
    "    if (a instanceof Err) return a.stack ? `${a.name}: ${a.message}\\n${a.stack}` : S(a);\n"
    "    if (a !== null && typeof a === 'object') { try { return stringify(a); } catch { } }\n"
    "    return S(a);\n"
    "  };\n"
    "  const line = (args) => { let s = ''; for (let i = 0; i < args.length; i++) s += (i ? ' ' : '') + show(args[i]); return s; };\n"
    "  const out = (...a) => print(1, line(a)), err = (...a) => print(2, line(a));\n"
    "  globalThis.console = { log: out, info: out, debug: out, error: err, warn: err, trace: err };\n"
    "  const host = {};\n"
    "  for (const n of names) {\n"
    "    host[n] = (...args) => new Promise((resolve, reject) => {\n"
    "      const id = next++;\n"
    "      waiters.set(id, { resolve, reject });\n"
    "      outbox.push({ id, fn: n, args });\n"
    "    });\n"
    "  }\n"
    "  globalThis.host = Object.freeze(host);\n"
    "  const describe = (e) => {\n"
    "    if ((e === null || typeof e !== 'object') && typeof e !== 'function')\n"
    "      return { name: '', message: S(e), stack: '', nonError: true };\n"
    "    let name = 'Error', message = '', stack = '';\n"
    "    try { name = S(e.name); } catch { }\n"
    "    try { message = S(e.message); } catch { }\n"
    "    try { if (typeof e.stack === 'string') stack = e.stack; } catch { }\n"
    "    return { name, message, stack };\n"
    "  };\n"
    "  return {\n"
    "    take() { const o = outbox; outbox = []; return o; },\n"
    "    reset() { waiters.clear(); outbox = []; },\n"
    "    call(text) {\n"
    "      const req = read(text);\n"
    "      if (!isArray(req) || typeof req[0] !== 'string') throw new TypeError('call: expected [path, ...args]');\n"
    "      const path = req[0].split('.');\n"
    "      let self = globalThis, fn = globalThis;\n"
    "      for (const p of path) {\n"
    "        if (fn === null || fn === undefined) break;\n"
    "        self = fn; fn = fn[p];\n"
    "      }\n"
    "      if (typeof fn !== 'function') throw new TypeError(`${req[0]} is not a function`);\n"
    "      return fn.apply(self, req.slice(1));\n"
    "    },\n"
    "    settle(text) {\n"
    "      const replies = read(text);\n"
    "      if (!isArray(replies)) throw new TypeError('resume: expected an array of replies');\n"
    "      for (const r of replies) {\n"
    "        const w = waiters.get(r && r.id);\n"
    "        if (!w) continue;\n"
    "        waiters.delete(r.id);\n"
    "        if (r.error) {\n"
    "          const e = new Err(S(r.error.message));\n"
    "          e.name = S(r.error.name || 'Error');\n"
    "          w.reject(e);\n"
    "        } else w.resolve(r.value);\n"
    "      }\n"
    "    },\n"
    "    envelope(kind, v) {\n"
    "      if (kind === 0) return v === undefined ? '{}' : write({ value: v });\n"
    "      if (kind === 2) return write({ pending: v });\n"
    "      if (kind === 3) return stringify({ error: { name: 'UnsettledPromiseError',\n"
    "        message: 'the result is a promise that can never settle (it waits on nothing the host can answer)', stack: '' } });\n"
    "      return stringify({ error: describe(v) });\n"
    "    },\n"
    "  };\n"
    "})";

/*
 * qjs_init(config) -> reply: creates the runtime and context. The config is JSON:
 * {"memoryLimit": bytes, "stackLimit": bytes, "seed": integer, "hostFunctions": ["name", ...]}
 * (all optional). Reply `{}` or `{"error": ...}`. Only the first successful call initialises.
 */
__attribute__((export_name("qjs_init"))) uint64_t qjs_init(char *ptr, uint32_t len) {
  char *text = terminate(ptr, len);
  if (!text) return static_reply(REPLY_NO_MEMORY);
  if (drv_rt) {
    free(text);
    enter();
    JS_ThrowInternalError(drv_ctx, "qjs_init was already called");
    return envelope(REPLY_ERROR, JS_GetException(drv_ctx));
  }
  JSRuntime *rt = JS_NewRuntime();
  JSContext *ctx = rt ? JS_NewContext(rt) : NULL;
  if (!ctx) {
    free(text);
    if (rt) JS_FreeRuntime(rt);
    return static_reply(REPLY_NO_MEMORY);
  }
  drv_rt = rt;
  drv_ctx = ctx;
  drv_obj = JS_UNDEFINED;
  drv_waiting = JS_UNDEFINED;
  enter();

  JSValue config = JS_ParseJSON(ctx, text, len, "<config>");
  free(text);
  if (JS_IsException(config)) goto fail;
  double memory_limit = 0, stack_limit = 0, seed = 0;
  JSValue v = JS_GetPropertyStr(ctx, config, "memoryLimit");
  if (!JS_IsUndefined(v) && JS_ToFloat64(ctx, &memory_limit, v) < 0) goto fail_config;
  v = JS_GetPropertyStr(ctx, config, "stackLimit");
  if (!JS_IsUndefined(v) && JS_ToFloat64(ctx, &stack_limit, v) < 0) goto fail_config;
  v = JS_GetPropertyStr(ctx, config, "seed");
  if (!JS_IsUndefined(v) && JS_ToFloat64(ctx, &seed, v) < 0) goto fail_config;
  JSValue names = JS_GetPropertyStr(ctx, config, "hostFunctions");
  if (JS_IsUndefined(names)) names = JS_NewArray(ctx);
  JS_FreeValue(ctx, config);

  /* Out of range: the default stays. */
  if (stack_limit >= DRV_STACK_MIN && stack_limit <= DRV_STACK_MAX) drv_stack_size = (size_t)stack_limit;
  enter();
  uint64_t s = (uint64_t)seed;
  ctx->random_state = s ? s : 1;

  JSValue prelude = JS_Eval(ctx, PRELUDE, sizeof(PRELUDE) - 1, "<driver>", JS_EVAL_TYPE_GLOBAL);
  if (JS_IsException(prelude)) {
    JS_FreeValue(ctx, names);
    goto fail;
  }
  JSValue global = JS_GetGlobalObject(ctx);
  JSValue json = JS_GetPropertyStr(ctx, global, "JSON");
  JS_FreeValue(ctx, global);
  JSValue args[4] = {JS_NewCFunction(ctx, js_print, "print", 2), names,
                     JS_GetPropertyStr(ctx, json, "stringify"),
                     JS_GetPropertyStr(ctx, json, "parse")};
  JS_FreeValue(ctx, json);
  drv_obj = JS_Call(ctx, prelude, JS_UNDEFINED, 4, args);
  for (int i = 0; i < 4; i++) JS_FreeValue(ctx, args[i]);
  JS_FreeValue(ctx, prelude);
  if (JS_IsException(drv_obj)) {
    drv_obj = JS_UNDEFINED;
    goto fail;
  }
  /* After the driver's own set-up, so a limit too small for it still leaves a working driver. */
  if (memory_limit > 0) JS_SetMemoryLimit(rt, (size_t)memory_limit);
  return string_reply(JS_NewString(ctx, "{}"));

fail_config:
  JS_FreeValue(ctx, config);
fail: {
  /* Report the error, then tear down so a later qjs_init can try again. */
  JSValue e = JS_GetException(ctx);
  const char *m = JS_ToCString(ctx, e);
  char *out = NULL;
  size_t n = 0;
  if (m) {
    JSValue msg = JS_NewString(ctx, m);
    JS_FreeCString(ctx, m);
    JSValue g = JS_GetGlobalObject(ctx);
    JSValue j = JS_GetPropertyStr(ctx, g, "JSON");
    JSValue st = JS_GetPropertyStr(ctx, j, "stringify");
    JSValue q = JS_Call(ctx, st, j, 1, &msg);
    const char *qs = JS_IsException(q) ? NULL : JS_ToCStringLen(ctx, &n, q);
    if (qs) {
      static const char head[] = "{\"error\":{\"name\":\"InternalError\",\"message\":";
      static const char tail[] = ",\"stack\":\"\"}}";
      out = malloc(sizeof(head) - 1 + n + sizeof(tail) - 1);
      if (out) {
        memcpy(out, head, sizeof(head) - 1);
        memcpy(out + sizeof(head) - 1, qs, n);
        memcpy(out + sizeof(head) - 1 + n, tail, sizeof(tail) - 1);
        n = sizeof(head) - 1 + n + sizeof(tail) - 1;
      }
      JS_FreeCString(ctx, qs);
    }
    JS_FreeValue(ctx, q);
    JS_FreeValue(ctx, st);
    JS_FreeValue(ctx, j);
    JS_FreeValue(ctx, g);
    JS_FreeValue(ctx, msg);
  }
  JS_FreeValue(ctx, e);
  JS_FreeValue(ctx, drv_obj);
  JS_FreeContext(ctx);
  JS_FreeRuntime(rt);
  drv_rt = NULL;
  drv_ctx = NULL;
  return out ? pack(out, n) : static_reply(REPLY_NO_MEMORY);
}
}

/* qjs_seed(lo, hi): re-seeds Math.random (e.g. in each copy restored from one snapshot). */
__attribute__((export_name("qjs_seed"))) void qjs_seed(uint32_t lo, uint32_t hi) {
  if (!drv_ctx) return;
  uint64_t s = ((uint64_t)hi << 32) | lo;
  drv_ctx->random_state = s ? s : 1;
}

/* The seed header qjs_eval and qjs_call accept: 0xFF (a byte UTF-8 never has, so no text starts
 * with it), then Math.random's 64-bit state little-endian (0 counts as 1). It lets the host hand
 * a copy's fresh seed over with its first call instead of in a VM entry of its own (docs/js.md,
 * "console, time, random"). Takes the header off the NUL-terminated `text` of `len` bytes and
 * returns the length left; text without one is left as it is. */
#define SEED_HEADER 9
static uint32_t take_seed(char *text, uint32_t len) {
  if (len < SEED_HEADER || (unsigned char)text[0] != 0xFF) return len;
  uint64_t s = 0;
  for (int i = 8; i >= 1; i--) s = s << 8 | (unsigned char)text[i];
  drv_ctx->random_state = s ? s : 1;
  memmove(text, text + SEED_HEADER, len - SEED_HEADER + 1); /* with the NUL */
  return len - SEED_HEADER;
}

/* qjs_eval(source) -> reply: evaluates a classic script in the global scope (after a seed header,
 * if the input has one). */
__attribute__((export_name("qjs_eval"))) uint64_t qjs_eval(char *ptr, uint32_t len) {
  char *src = terminate(ptr, len);
  if (!src) return static_reply(REPLY_NO_MEMORY);
  if (!drv_ctx) {
    free(src);
    return static_reply(REPLY_NOT_INIT);
  }
  len = take_seed(src, len);
  enter();
  abandon();
  JSValue v = JS_Eval(drv_ctx, src, len, "<eval>", JS_EVAL_TYPE_GLOBAL);
  free(src);
  return finish(v);
}

/* qjs_call(request) -> reply: the request is the JSON array [path, ...args] (after a seed header,
 * if the input has one); calls the function at the dotted path from globalThis, with the object
 * that holds it as `this`. */
__attribute__((export_name("qjs_call"))) uint64_t qjs_call(char *ptr, uint32_t len) {
  char *text = terminate(ptr, len);
  if (!text) return static_reply(REPLY_NO_MEMORY);
  if (!drv_ctx) {
    free(text);
    return static_reply(REPLY_NOT_INIT);
  }
  len = take_seed(text, len);
  enter();
  abandon();
  JSValue arg = JS_NewStringLen(drv_ctx, text, len);
  free(text);
  if (JS_IsException(arg)) return finish(arg);
  JSValue v = drv_method("call", 1, &arg);
  JS_FreeValue(drv_ctx, arg);
  return finish(v);
}

/* qjs_resume(replies) -> reply: answers the host calls of a `pending` reply (JSON array of
 * {"id", "value"} or {"id", "error": {"name", "message"}}) and continues the waiting call. */
__attribute__((export_name("qjs_resume"))) uint64_t qjs_resume(char *ptr, uint32_t len) {
  char *text = terminate(ptr, len);
  if (!text) return static_reply(REPLY_NO_MEMORY);
  if (!drv_ctx) {
    free(text);
    return static_reply(REPLY_NOT_INIT);
  }
  enter();
  if (JS_IsUndefined(drv_waiting)) {
    free(text);
    JS_ThrowInternalError(drv_ctx, "qjs_resume: no call is waiting on host functions");
    return envelope(REPLY_ERROR, JS_GetException(drv_ctx));
  }
  JSValue arg = JS_NewStringLen(drv_ctx, text, len);
  free(text);
  JSValue waiting = drv_waiting;
  drv_waiting = JS_UNDEFINED;
  if (JS_IsException(arg)) {
    JS_FreeValue(drv_ctx, waiting);
    return finish(arg);
  }
  JSValue r = drv_method("settle", 1, &arg);
  JS_FreeValue(drv_ctx, arg);
  if (JS_IsException(r)) {
    JS_FreeValue(drv_ctx, waiting);
    return finish(r);
  }
  JS_FreeValue(drv_ctx, r);
  return finish(waiting);
}
