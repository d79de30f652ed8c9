/**
 * The Python side of `PySandbox`: a driver that CPython runs with `-c` on every `_start` of the
 * interpreter (docs/python.md, "The protocol").
 *
 * Request (host → guest, stdin): 12 decimal digits (the body's length), then the JSON body, one
 * of `{"op":"setup"|"run","code":…,"value":bool,"seed":hex,"argv"?:[…]}` or
 * `{"op":"call","fn":name,"args":[…],"seed":hex}`. Reply (guest → host, fd 1):
 * `\x00\x01HLPY<decimal length>\n<JSON>`, the JSON `{"ok":true,"stdout","stderr","value"?}` or
 * `{"ok":false,"type","message","traceback","stdout","stderr"}`. While user code runs,
 * `sys.stdout`/`sys.stderr` are buffers (a print of any size arrives whole, in the reply) and
 * `sys.stdin` is empty. User code runs in `__main__`'s namespace (emptied by `setup`); the
 * driver's own names live in a namespace of its own. `random` is seeded from the first half of the
 * request's `seed` (64 random bytes in hex), and `os.urandom` keyed from the second (BLAKE2b in
 * counter mode), so neither's output tells anything about the other's.
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

/**
 * The marker of a frame on fd 1; then the kind (`Y` a reply, `F` an `hl.fetch` request), the
 * decimal length, a newline and the JSON.
 */
export const FRAME_MARKER: Uint8Array = new Uint8Array([0, 1, 0x48, 0x4c, 0x50]);

/** Bytes of the request header: the body's length, 12 decimal digits. */
export const REQUEST_HEADER = 12;

/**
 * The driver's source. Each `_start` of the interpreter runs it once (`-c`, in a namespace of its
 * own, so `__main__` gets no names from it): it reads one request from fd 0 with `os.read` (no
 * buffering left behind), runs it, writes one reply and calls `os._exit(0)`, which ends `_start`
 * without finalizing the interpreter.
 */
const SOURCE = String.raw`
import _ast, builtins, hashlib, io, json, os, posix, random, sys, traceback

# The driver's own references: user code that replaces json.dumps or os.write changes only its
# own request (every request starts from the snapshot taken after setup).
dumps, loads, read, write, exit = json.dumps, json.loads, os.read, os.write, os._exit
StringIO, format_exception = io.StringIO, traceback.format_exception

def read_frame():
    # The host sends each frame as one chunk: usually one read gets all of it.
    data = read(0, 1 << 16)
    while len(data) < 12:
        more = read(0, 12 - len(data))
        if not more:
            exit(2)
        data += more
    size = int(data[:12])
    if size < 0 or len(data) > 12 + size:
        exit(2)
    parts = [data[12:]]
    left = size - len(parts[0])
    while left > 0:
        more = read(0, left)
        if not more:
            exit(2)
        parts.append(more)
        left -= len(more)
    return loads(b"".join(parts))

def send(obj, kind=b"Y"):
    data = dumps(obj, ensure_ascii=True).encode("ascii")
    view = memoryview(b"\x00\x01HLP" + kind + str(len(data)).encode() + b"\n" + data)
    while len(view):
        view = view[write(1, view):]

def make_hl():
    # The module 'hl': hl.fetch, over the host's allow-list (the sandbox's net option).
    import base64, types
    hl = types.ModuleType("hl", "Host services of the sandbox: fetch (docs/python.md).")

    class NetworkPolicyError(Exception):
        "The host's rules refused the request; nothing was sent."

    class NetworkError(Exception):
        "The request was allowed and failed (connect, timeout, a body over its limit)."

    class Response:
        def __init__(self, a):
            self.status = a["status"]
            self.status_text = a.get("statusText", "")
            self.url = a.get("url", "")
            self.headers = dict((k.lower(), v) for k, v in a.get("headers", []))
            self.content = base64.b64decode(a.get("bodyBase64", ""))
            self.ok = 200 <= self.status < 300
        def text(self):
            return self.content.decode("utf-8", "replace")
        def json(self):
            return loads(self.content)
        def __repr__(self):
            return "<hl.Response [%d]>" % self.status

    def fetch(url, method="GET", headers=None, body=None):
        "Makes an HTTP request through the host; returns an hl.Response."
        req = {"url": str(url), "method": str(method)}
        if headers:
            items = headers.items() if isinstance(headers, dict) else headers
            req["headers"] = [[str(k), str(v)] for k, v in items]
        if body is not None:
            if isinstance(body, str):
                req["body"] = body
            else:
                req["bodyBase64"] = base64.b64encode(bytes(body)).decode("ascii")
        send(req, b"F")
        answer = read_frame()
        error = answer.get("error")
        if error is not None:
            cls = NetworkPolicyError if error.get("name") == "NetworkPolicyError" else NetworkError
            raise cls(error.get("message", ""))
        return Response(answer)

    hl.fetch, hl.Response = fetch, Response
    hl.NetworkPolicyError, hl.NetworkError = NetworkPolicyError, NetworkError
    sys.modules["hl"] = hl

def jsonable(v):
    try:
        dumps(v, allow_nan=False)
        return v
    except (TypeError, ValueError, RecursionError):
        return repr(v)

def keyed_urandom(key):
    state = [0]
    def urandom(size):
        size = size.__index__()
        if size < 0:
            raise ValueError("negative argument not allowed")
        out = bytearray()
        while len(out) < size:
            out += hashlib.blake2b(state[0].to_bytes(8, "little"), key=key).digest()
            state[0] += 1
        return bytes(out[:size])
    return urandom

# A Random() made without a seed (tempfile's, user code's) would seed itself from the C-level WASI
# random_get stream, which is part of the snapshot every request starts from, so the same in every
# request: seed it from os.urandom instead, which each request keys afresh (looked up per call).
_random_seed = random.Random.seed
def _seed(self, a=None, version=2):
    if a is None:
        a = int.from_bytes(os.urandom(32), "little")
    _random_seed(self, a, version)
random.Random.seed = _seed

def as_expression(code):
    # The code compiled as one expression, or None when it is not one (then the statements path
    # parses it to a tree, finds a last expression and compiles again: twice the work).
    # Any failure (a SyntaxError, a null byte's ValueError) is left to that path, which raises it
    # with the user's frames only.
    try:
        return compile(code, "<run>", "eval")
    except Exception:
        return None

def serve():
    req = read_frame()
    main = sys.modules["__main__"].__dict__
    if req["op"] == "setup":
        main.clear()
        main.update({"__name__": "__main__", "__builtins__": builtins, "__doc__": None})
    seed = req["seed"]
    random.seed(int(seed[:64], 16))
    # posix.urandom is os.urandom's C function: replaced too, or it reads the snapshot's stream.
    os.urandom = random._urandom = posix.urandom = keyed_urandom(bytes.fromhex(seed[64:128]))
    if "argv" in req:
        sys.argv = list(req["argv"])
    out, err = StringIO(), StringIO()
    real = (sys.stdin, sys.stdout, sys.stderr)
    sys.stdin, sys.stdout, sys.stderr = StringIO(""), out, err
    res = {"ok": True}
    try:
        if req["op"] == "call":
            f = main.get(req["fn"])
            if not callable(f):
                raise NameError("name %r is not a function in __main__" % req["fn"])
            v = f(*req["args"])
            dumps(v, allow_nan=False)
            res["value"] = v
        elif req.get("value") and (expr := as_expression(req["code"])) is not None:
            # One expression (print(...), a name, a call): compiled once, its value kept.
            v = eval(expr, main)
            if v is not None:
                res["value"] = jsonable(v)
        else:
            # _ast (built in), not ast (a module to import): its compile flag gives the tree.
            tree = compile(req["code"], "<run>", "exec", _ast.PyCF_ONLY_AST)
            last = None
            if req.get("value") and tree.body and isinstance(tree.body[-1], _ast.Expr):
                last = _ast.Expression(tree.body.pop().value)
            exec(compile(tree, "<run>", "exec"), main)
            if last is not None:
                v = eval(compile(last, "<run>", "eval"), main)
                if v is not None:
                    res["value"] = jsonable(v)
    except BaseException as e:
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        res = {"ok": False, "type": type(e).__name__, "message": str(e),
               "traceback": "".join(format_exception(type(e), e, tb))}
    finally:
        sys.stdin, sys.stdout, sys.stderr = real
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        res["stdout"] = out.getvalue()
        res["stderr"] = err.getvalue()
        del out, err
        send(res)
    except MemoryError:
        out = err = res = None
        send({"ok": False, "type": "MemoryError", "message": "the output did not fit in memory",
              "traceback": "", "stdout": "", "stderr": ""})

def entry(leave=True):
    # A command (_start) leaves with os._exit(0); a reactor's turn returns (leave=False).
    try:
        if "hl" not in sys.modules:
            make_hl()
        serve()
    finally:
        if leave:
            exit(0)
`;

/**
 * The environment variable that carries the driver's boot code ({@linkcode DRIVER_BOOT}, with
 * {@linkcode SOURCE} inside) to the interpreter's first `_start` (the `cpython` runtime): the code
 * `-c` runs is compiled on every `_start`, so it must be short; the boot code (~7 KB, compiled
 * once, at setup) travels beside it. The first boot removes it from `os.environ`, so a request
 * never sees it.
 */
export const DRIVER_ENV = "HL_PY_DRIVER";

/** The driver's source (what the boot code makes the module `_hl_driver` from). */
export const DRIVER_SOURCE: string = SOURCE;

/**
 * The code every later `_start` runs, compiled once by the boot code and kept as `sys._hl_entry`
 * (a code object: `exec` runs it without compiling); it binds no name in `__main__`.
 */
const ENTRY = `__import__("_hl_driver").entry(True)`;

/**
 * What the first `_start` runs (the value of {@linkcode DRIVER_ENV}): in a namespace of its own,
 * it makes the driver module `_hl_driver` from {@linkcode SOURCE}, compiles {@linkcode ENTRY} into
 * `sys._hl_entry` for the later `_start`s, and serves the setup request.
 */
export const DRIVER_BOOT: string = `exec(${
  JSON.stringify(`
import sys, types
d = types.ModuleType("_hl_driver")
exec(${JSON.stringify(SOURCE)}, d.__dict__)
sys.modules["_hl_driver"] = d
sys._hl_entry = compile(${JSON.stringify(ENTRY)}, "<hl>", "exec")
d.entry(True)
`)
}, {"__name__": "_hl"})`;

/**
 * What `-c` runs on every `_start` (the `cpython` runtime, a command): one call that binds no
 * name in `__main__`. The first time it runs the boot code from {@linkcode DRIVER_ENV}; later
 * requests start from a snapshot that has `sys._hl_entry`, the driver's entry already compiled.
 * Short and without nested functions on purpose: CPython compiles it on every `_start`, and
 * compiling costs per token and per function scope (measured in the guest, best of 15 batches:
 * the earlier text with three lambdas ~450-800 µs, this one ~140-290 µs, `1` ~40-60 µs;
 * docs/python.md, "Figures").
 */
export const DRIVER: string = `exec(getattr(__import__("sys"), "_hl_entry", None) or ` +
  `__import__("os").environ.pop("${DRIVER_ENV}"))`;

/**
 * The code of the setup `turn` of a reactor build (the `full` runtime): makes the driver module
 * from its source (a string literal here: a turn's code is placed in guest memory, not in the
 * environment) and runs the setup request; the driver returns instead of leaving with `os._exit`.
 * A statement, so the reactor echoes no value.
 */
export const TURN_DRIVER: string = `exec(${
  JSON.stringify(`
import sys, types
d = types.ModuleType("_hl_driver")
exec(${JSON.stringify(SOURCE)}, d.__dict__)
sys.modules["_hl_driver"] = d
d.entry(False)
`)
}, {"__name__": "_hl"})`;

/**
 * The code of every later `turn` (placed after the setup, in the state requests start from): the
 * driver module is there; one short line to compile per request, binding no name in `__main__`.
 */
export const TURN_ENTRY = `__import__("sys").modules["_hl_driver"].entry(False)`;
