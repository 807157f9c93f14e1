function post() {}
