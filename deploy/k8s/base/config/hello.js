// The image's default route (/etc/hl/serve.json): a JsSandbox handler, JSON in and out.
function handler(request) {
  return {
    status: 200,
    headers: { "content-type": "text/plain" },
    body: `hello from hl serve: ${request.method} ${request.path}\n`,
  };
}
