// Virtual endpoint: answers GET /payments/status without calling upstream.
function statusHandler(request, session, config) {
  var response = {
    Body: JSON.stringify({status: "ok"}),
    Headers: {"Content-Type": "application/json"},
    Code: 200
  };
  return TykJsResponse(response, session.meta_data);
}
