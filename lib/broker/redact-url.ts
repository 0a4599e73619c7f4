/**
 * A URL with its password replaced by `****`, safe for logs and error messages. Passwords may hold
 * raw `@`, `/`, `?` or `#` (amqplib still connects with some of them), so the password runs to the
 * last `@`; a numeric segment after the colon is a port, not a password.
 */
export function redactUrl(url: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url);
  if (!scheme) return url;
  const rest = url.slice(scheme[0].length);
  const colon = rest.indexOf(':');
  if (colon < 0) return url;
  const user = rest.slice(0, colon);
  if (/[/?#@]/.test(user)) return url; // the colon is past the authority
  const afterColon = rest.slice(colon + 1);
  const delimiter = afterColon.search(/[/?#]/);
  const segment = delimiter < 0 ? afterColon : afterColon.slice(0, delimiter);
  if (!segment.includes('@') && /^\d*$/.test(segment)) return url; // host:port
  const at = afterColon.lastIndexOf('@');
  if (at < 0) return url;
  return scheme[0] + user + ':****' + afterColon.slice(at);
}
