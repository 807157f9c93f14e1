// Adds an X-Request-Id header to every request before it is proxied.
var addRequestId = new TykJS.TykMiddleware.NewMiddleware({});

addRequestId.NewProcessRequest(function(request, session, spec) {
  if (!request.Headers["X-Request-Id"]) {
    request.SetHeaders["X-Request-Id"] = "tyk-" + Date.now();
  }
  return addRequestId.ReturnData(request, {});
});
