function pre() {}
