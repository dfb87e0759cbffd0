# -*- test-case-name: tests.unit.test_service -*-
"""
Assemble a running balancer from a L{BalancerConfig}: listeners, the
backend pool, health checkers, the graceful drain on stop, and the level of
the balancer's log while it runs.

The session daemon a configuration may ask for (C{sessions}) is not built
here: tlbalance does not depend on tlsession. C{twistd tlbalance} builds it
and hands it to L{BalancerService.hostSessionDaemon}
(L{tlbalance.tap.makeService}).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.logger import LogLevel
from twisted.protocols.tls import TLSMemoryBIOFactory

from tlbalance._loglevel import balancerLogger, gate
from tlbalance.backends import Backend, BackendPool
from tlbalance.config import BalancerConfig, withListenBacklog
from tlbalance.health import HealthChecker
from tlbalance.localerrors import LocalErrors
from tlbalance.relay import BackendConnector, Balancer, FrontendFactory, RelaySettings
from tlbalance.runtime import RuntimeState
from tlbalance.schedulers import schedulerFor
from tlbalance.stats import ConnectionRates
from tlbalance.tls import splitServerTLS
from tlbalance.upstream import ProxyReceiverFactory, TrustedPeers
from tlsuite._listen import ListenService

log = balancerLogger("tlbalance.service")


class ListenerService(ListenService):
    """
    One listen endpoint of the balancer, which can tell where it listens
    (port 0 in tests, for one), and which pauses accepting with the others
    when the balancer runs out of file descriptors.

    @ivar localErrors: the balancer's L{LocalErrors}, which pauses the port,
        or C{None}.
    @ivar frontend: the L{FrontendFactory} that counts its connections.
    """

    frontend: Optional[FrontendFactory] = None

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: Any,
        localErrors: Optional[LocalErrors] = None,
    ) -> None:
        super().__init__(description, endpoint, factory)
        self.localErrors = localErrors

    def listened(self, port: IListeningPort) -> None:
        """
        Let the balancer pause this port when descriptors run out.
        """
        if self.localErrors is not None:
            self.localErrors.watchPort(port, self.description)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening; a pause in progress does not resume the port.
        """
        if self.port is not None and self.localErrors is not None:
            self.localErrors.unwatchPort(self.port)
        stopped: Deferred[None] = super().stopService()
        return stopped


class BalancerService(MultiService):
    """
    The C{twistd tlbalance} service: listeners plus health checkers.

    Stopping it is graceful: the listeners stop accepting first, open
    connections get up to C{drainTimeout} seconds to finish, and only then
    is anything still open closed.

    @ivar balancer: the shared L{Balancer} state.
    @ivar listeners: one service per listen endpoint.
    @ivar checkers: one L{HealthChecker} per backend with a check.
    @ivar sessionDaemon: the hosted tlsession daemon (C{--sessions}, see
        L{hostSessionDaemon}), or C{None}.
    @ivar control: the runtime API's control socket (C{--control}), or
        C{None}; it stays open during the drain.
    @ivar logLevel: the lowest level of the balancer's log events while it
        runs (C{twistd tlbalance} sets it, as twistd prints every event),
        or C{None} to leave them all to the log observers.
    @ivar statsListeners: one read-only HTTP service per C{--stats}
        endpoint (L{tlbalance.statsweb}).
    @ivar rates: samples the connection rates the stats show, or C{None}
        when nothing shows them.
    @ivar startedAt: the clock's time when the service started, or C{None}.
    @ivar runtime: the runtime API's L{RuntimeState}, which the control
        socket and a reload (L{tlbalance.reload}) share; set by
        L{makeBalancerService}.
    @ivar reload: reloads the configuration on SIGHUP
        (L{tlbalance.reload.SIGHUPReload}), or C{None}; it stops after the
        drain, so a SIGHUP meanwhile is refused rather than ending the
        process.
    """

    runtime: RuntimeState

    def __init__(
        self,
        config: BalancerConfig,
        balancer: Balancer,
        logLevel: Optional[LogLevel] = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.balancer = balancer
        self.logLevel = logLevel
        self.listeners: list[ListenerService] = []
        self.checkers: list[HealthChecker] = []
        self.sessionDaemon: Optional[IService] = None
        self.control: Optional[IService] = None
        self.reload: Optional[IService] = None
        self.statsListeners: list[ListenService] = []
        self.rates: Optional[ConnectionRates] = None
        self.startedAt: Optional[float] = None
        self._levelBefore: Optional[LogLevel] = None

    def hostSessionDaemon(self, daemon: IService) -> None:
        """
        Run the tlsession daemon in the balancer's process, as a child: it
        starts with the balancer and stops after the drain, since draining
        requests may still use their sessions.

        @param daemon: the daemon's service
            (L{tlsession.daemonconfig.makeDaemonService} builds it).
        """
        daemon.setServiceParent(self)
        self.sessionDaemon = daemon

    def startService(self) -> None:
        self.startedAt = self.balancer.clock.seconds()
        if self.logLevel is not None:
            self._levelBefore = gate.level
            gate.setLevel(self.logLevel)
        for warning in self.config.warnings():
            log.warn("{warning}", warning=warning)
        log.info(
            "tlbalance: {algorithm} over {count} backend(s), listening on {listen}",
            algorithm=self.config.algorithm,
            count=len(self.balancer.pool.backends),
            listen=", ".join(self.config.listen),
        )
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting, drain, then stop the checkers and backend timers.
        """
        self.running = False
        stopped = DeferredList(
            [maybeDeferred(listener.stopService) for listener in self.listeners]
        )

        def drain(_: Any) -> Deferred[None]:
            # Connections still waiting for their PROXY header carry no
            # client data yet and are not relayed: close them now rather
            # than leave them to the header timeout.
            for listener in self.listeners:
                if isinstance(listener.factory, ProxyReceiverFactory):
                    listener.factory.dropWaiting("the balancer is stopping")
            return self.balancer.drain(self.config.drainTimeout)

        def stopRest(_: Any) -> Deferred[Any]:
            self.balancer.localErrors.stop()
            for backend in self.balancer.pool.backends:
                backend.stop()
            stopping = [maybeDeferred(checker.stopService) for checker in self.checkers]
            # The stats stay up through the drain, which they show.
            stopping += [maybeDeferred(s.stopService) for s in self.statsListeners]
            if self.rates is not None:
                stopping.append(maybeDeferred(self.rates.stopService))
            if self.sessionDaemon is not None:
                stopping.append(maybeDeferred(self.sessionDaemon.stopService))
            if self.control is not None:
                stopping.append(maybeDeferred(self.control.stopService))
            if self.reload is not None:
                stopping.append(maybeDeferred(self.reload.stopService))
            return DeferredList(stopping)

        def restoreLogLevel(_: Any) -> None:
            if self.logLevel is not None:
                gate.setLevel(self._levelBefore)

        done: Deferred[Any] = stopped.addCallback(drain)
        done.addCallback(stopRest)
        done.addCallback(restoreLogLevel)
        return done


def listenerService(
    config: BalancerConfig, balancer: Balancer, reactor: Any, description: str
) -> ListenerService:
    """
    Build the service for one listen endpoint string.

    TLS is split off the endpoint and layered above the PROXY receiver, so
    that a header accepted from a trusted peer arrives before the TLS
    ClientHello, as senders write it. The listen queue is
    L{tlbalance.config.DEFAULT_BACKLOG} long unless the string sets one.
    """
    frontend = FrontendFactory(balancer, description)
    plain, factory = listenerFactory(config, reactor, description, frontend)
    listener = ListenerService(description, plain, factory, balancer.localErrors)
    listener.frontend = frontend
    return listener


def listenerFactory(
    config: BalancerConfig,
    reactor: Any,
    description: str,
    frontend: FrontendFactory,
) -> tuple[IStreamServerEndpoint, IProtocolFactory]:
    """
    The endpoint to listen on for one listen endpoint string, and the
    factory to give it: C{frontend} under TLS (its certificate files read
    now) and the PROXY receiver, as C{config} asks. A reload builds a kept
    listener's factory again with it, keeping the frontend and its counts.
    """
    plain, contextFactory = splitServerTLS(
        reactor, withListenBacklog(description), config.tlsSettings()
    )
    factory: IProtocolFactory = frontend
    if contextFactory is not None:
        factory = TLSMemoryBIOFactory(contextFactory, False, factory, clock=reactor)
    if config.acceptProxy:
        factory = ProxyReceiverFactory(
            factory,
            TrustedPeers.fromList(config.acceptProxy),
            headerTimeout=config.proxyHeaderTimeout,
            clock=reactor,
        )
    return plain, factory


def relaySettings(config: BalancerConfig) -> RelaySettings:
    """
    What the relay takes from C{config}: at start, and again at a reload.
    """
    return RelaySettings(
        connectTimeout=config.connectTimeout,
        clientTimeout=config.clientTimeout,
        serverTimeout=config.serverTimeout,
        firstByteTimeout=config.firstByteTimeout,
        retries=config.retries,
        pendingBufferBytes=config.pendingBufferBytes,
        proxyCRC32C=config.proxyCRC32C,
        logNormal=not config.dontlogNormal,
    )


def makeBalancerService(
    config: BalancerConfig,
    reactor: Optional[Any] = None,
    logLevel: Optional[LogLevel] = None,
) -> BalancerService:
    """
    Build the whole balancer for C{config}.

    @param config: a validated configuration.
    @param reactor: the reactor to use; the global one when C{None}.
    @param logLevel: the lowest level of the balancer's log events while
        the service runs; C{None} lets them all through.
    @return: a service to start (twistd does it) or to parent. It hosts no
        session daemon, even when C{config.sessions} asks for one: see
        L{BalancerService.hostSessionDaemon}.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor

    backends = []
    connectors = {}
    for backendConfig in config.backends:
        backend = Backend.fromConfig(
            backendConfig,
            reactor,
            failTimeout=config.failTimeout,
            sendProxy=config.sendProxy,
        )
        backends.append(backend)
        connectors[backend.name] = BackendConnector.fromString(
            reactor, backendConfig.endpoint, config.connectTimeout
        )
    pool = BackendPool(backends, schedulerFor(config.algorithm))
    balancer = Balancer(pool, connectors, relaySettings(config), reactor)
    service = BalancerService(config, balancer, logLevel)
    service.runtime = RuntimeState(service)

    if config.control is not None:
        from tlbalance.control import ControlService

        # The first child: a control path that is taken stops the start
        # before any listener binds.
        control = ControlService(config.control, reactor, service.runtime)
        control.setServiceParent(service)
        service.control = control

    for description in config.listen:
        listener = listenerService(config, balancer, reactor, description)
        listener.setServiceParent(service)
        service.listeners.append(listener)

    for backend, backendConfig in zip(backends, config.backends):
        if backendConfig.check is None:
            continue
        checker = HealthChecker(
            reactor,
            backend,
            backendConfig.check,
            connect=connectors[backend.name].connectWithPreamble,
            sendProxy=backend.sendProxy,
            localErrors=balancer.localErrors,
        )
        checker.setServiceParent(service)
        service.checkers.append(checker)

    if config.stats:
        # Imported only when asked for: prometheus_client and twisted.web.
        from tlbalance.statsweb import statsListenerService

        service.rates = ConnectionRates(reactor, service)
        service.rates.setServiceParent(service)
        for description in config.stats:
            stats = statsListenerService(service, reactor, description)
            stats.setServiceParent(service)
            service.statsListeners.append(stats)

    return service
