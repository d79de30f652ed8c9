// The image's default route (/etc/hl/serve.json): a JsSandbox handler, JSON in and out.
// deno-lint-ignore no-unused-vars
function handler(request) {
  return {
    status: 200,
    headers: { "content-type": "text/plain" },
    body: `hello from hl serve: ${request.method} ${request.path}\n`,
  };
}
