/**
 * The server's connections: how many may be open, how long one may sit idle,
 * and whether the peer of a connection with streams open is still there.
 *
 * - **A cap.** At `maxConnections` a new connection takes the place of the
 *   connection idle the longest (nothing in flight; also one that has not
 *   said anything yet); when none is idle it is refused. So idle connections
 *   can never keep a caller with work out, nor run the process out of file
 *   descriptors.
 * - **An idle timeout.** A connection with no call in flight for
 *   `idleTimeoutMs` is closed: an HTTP/2 one gracefully (GOAWAY), an
 *   HTTP/1.1 one by closing its socket.
 * - **Keepalive.** An HTTP/2 connection with streams open is pinged every
 *   `keepaliveMs`; one that has not answered by the next ping is gone (its
 *   host vanished, or it stopped reading its socket) and is destroyed, which
 *   ends its streams. HTTP/1.1 sockets get TCP keepalive at the same interval.
 *
 * Deadlines are entries on a timer wheel and the pings one interval for all
 * connections: nothing is armed per request.
 */
import type http2 from "node:http2";
import type net from "node:net";
import type { Logger } from "../log.js";
import { TimerWheel, type WheelEntry } from "../engine/timer-wheel.js";

export interface ConnectionLimits {
  maxConnections: number;
  idleTimeoutMs: number;
  keepaliveMs: number;
}

const CONNECTION = Symbol("mailroom connection");

/**
 * Anything a connection's socket can be reached through: the socket itself,
 * and the proxies Node's http2 puts in front of it (`session.socket`,
 * `request.socket`), which forward property reads to it.
 */
type SocketLike = object;

export class Connection {
  /** Requests (HTTP/2 streams) in flight. */
  active = 0;
  session: http2.ServerHttp2Session | undefined;
  pingSentAt: number | undefined;
  /** Until its first bytes: a cleartext connection whose protocol is not known yet. */
  sniffing = false;
  readonly idleDeadline: WheelEntry;

  constructor(
    readonly socket: net.Socket,
    onIdle: (connection: Connection) => void,
    wheel: TimerWheel,
  ) {
    this.idleDeadline = wheel.entry(() => onIdle(this));
  }
}

export class Connections {
  /** Connections with nothing in flight, the longest idle first (a Set keeps insertion order). */
  private readonly idle = new Set<Connection>();
  private readonly all = new Set<Connection>();
  private readonly wheel: TimerWheel;
  private readonly pinger: NodeJS.Timeout;
  private refused = { count: 0, loggedAt: Number.NEGATIVE_INFINITY };

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly logger: Logger,
  ) {
    this.wheel = new TimerWheel(Math.max(10, Math.min(1000, Math.floor(limits.idleTimeoutMs / 4))));
    this.pinger = setInterval(() => this.ping(), limits.keepaliveMs);
    this.pinger.unref();
  }

  /**
   * A new TCP connection (`open` of them, it included, are open now): true
   * when it may stay, having evicted the connection idle the longest if the
   * cap is reached; false when it must be refused.
   */
  admit(open: number): boolean {
    if (open <= this.limits.maxConnections) return true;
    const [oldest] = this.idle;
    if (oldest !== undefined) {
      this.drop(oldest);
      return true;
    }
    this.refused.count++;
    const now = performance.now();
    if (now - this.refused.loggedAt >= 10_000) {
      this.logger.warn({ max_connections: this.limits.maxConnections, refused: this.refused.count }, "connection limit reached with every connection busy: refusing new connections");
      this.refused = { count: 0, loggedAt: now };
    }
    return false;
  }

  /** Starts tracking the socket a connection's requests arrive on (the TLS socket, with TLS); idle until its first request. */
  track(socket: net.Socket, options: { sniffing?: boolean; keepalive?: boolean } = {}): Connection {
    const connection = new Connection(socket, (idle) => this.idleTimedOut(idle), this.wheel);
    connection.sniffing = options.sniffing ?? false;
    (socket as SocketLike & { [CONNECTION]?: Connection })[CONNECTION] = connection;
    this.all.add(connection);
    this.becameIdle(connection);
    if (options.keepalive) socket.setKeepAlive(true, this.limits.keepaliveMs);
    socket.once("close", () => this.forget(connection));
    return connection;
  }

  /** The connection a socket, session or request socket belongs to. */
  of(socket: SocketLike | undefined): Connection | undefined {
    return (socket as (SocketLike & { [CONNECTION]?: Connection }) | undefined)?.[CONNECTION];
  }

  /** A cleartext connection's protocol is known: from now on it idles out like any other. */
  handedOver(connection: Connection, keepalive: boolean): void {
    connection.sniffing = false;
    if (keepalive) connection.socket.setKeepAlive(true, this.limits.keepaliveMs);
    if (connection.active === 0) this.becameIdle(connection);
  }

  attachSession(session: http2.ServerHttp2Session): void {
    const connection = this.of(session.socket);
    if (connection) connection.session = session;
  }

  begin(connection: Connection): void {
    if (connection.active++ > 0) return;
    this.idle.delete(connection);
    this.wheel.cancel(connection.idleDeadline);
  }

  end(connection: Connection): void {
    if (--connection.active === 0 && this.all.has(connection)) this.becameIdle(connection);
  }

  stop(): void {
    clearInterval(this.pinger);
    for (const connection of this.all) this.wheel.cancel(connection.idleDeadline);
  }

  private becameIdle(connection: Connection): void {
    this.idle.delete(connection);
    this.idle.add(connection);
    // A connection still sniffing has its own, shorter deadline (the header timeout).
    if (!connection.sniffing) this.wheel.schedule(connection.idleDeadline, this.wheel.now() + this.limits.idleTimeoutMs);
  }

  private idleTimedOut(connection: Connection): void {
    if (connection.active > 0 || !this.all.has(connection)) return;
    if (connection.session) connection.session.close();
    else connection.socket.end();
  }

  /** Closes a connection now, to make room for a new one. */
  private drop(connection: Connection): void {
    this.forget(connection);
    if (connection.session) connection.session.destroy();
    connection.socket.destroy();
  }

  private forget(connection: Connection): void {
    this.all.delete(connection);
    this.idle.delete(connection);
    this.wheel.cancel(connection.idleDeadline);
  }

  private ping(): void {
    const now = performance.now();
    for (const connection of this.all) {
      const session = connection.session;
      if (session === undefined || connection.active === 0 || session.destroyed) continue;
      if (connection.pingSentAt !== undefined) {
        this.logger.info({ keepalive_ms: this.limits.keepaliveMs, streams: connection.active }, "closed an HTTP/2 connection whose peer did not answer a ping: its streams end");
        session.destroy();
        continue;
      }
      connection.pingSentAt = now;
      const sent = session.ping((error) => {
        if (!error) connection.pingSentAt = undefined;
      });
      if (!sent) connection.pingSentAt = undefined;
    }
  }
}
