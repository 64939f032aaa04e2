// The longtask HTTP API from the browser: a Bearer key on every call, and errors as ApiError
// built from the server's {"error": code, "detail": ...} body.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(`${code}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(getKey) {
    this.getKey = getKey;
  }

  async call(method, path, body, type) {
    const key = this.getKey();
    if (!key) throw new ApiError(0, "missing_key", "enter an API key first");
    const headers = { Authorization: `Bearer ${key}` };
    if (type) headers["Content-Type"] = type;
    let response;
    try {
      response = await fetch(path, { method, body, headers });
    } catch (err) {
      throw new ApiError(0, "network_error", `the server did not answer (${err.message})`);
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // a proxy's HTML error page, say: reported below with its status
    }
    if (!response.ok) {
      throw new ApiError(response.status, data?.error ?? `http_${response.status}`,
                         data?.detail ?? (text.slice(0, 200) || response.statusText));
    }
    return data;
  }

  get(path, query = {}) {
    const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v));
    const qs = params.toString();
    return this.call("GET", qs ? `${path}?${qs}` : path);
  }

  post(path, body) {
    return this.call("POST", path, body);
  }

  postJson(path, value) {
    return this.call("POST", path, JSON.stringify(value), "application/json");
  }
}
