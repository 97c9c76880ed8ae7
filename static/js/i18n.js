// Every string the dashboard shows, in Spanish and English. Markup refers to
// keys with data-i18n (text), data-i18n-placeholder, data-i18n-title and
// data-i18n-aria-label, so switching language is one pass over the DOM.

const STRINGS = {
  en: {
    'app.title': 'fleethub — dispatch',
    'app.skip': 'Skip to the driver list',
    'lang.label': 'Language',
    'signin.title': 'Sign in',
    'signin.intro': 'Paste an access token for a dispatcher or admin. It is kept only for this browser tab.',
    'signin.token': 'Access token',
    'signin.submit': 'Sign in',
    'signin.checking': 'Checking the token…',
    'signin.expired': 'Your session has expired. Please sign in again.',
    'signin.invalid': 'That token was not accepted.',
    'signin.wrongRole': 'This token belongs to a driver. Use a dispatcher or admin token.',
    'signin.unreachable': 'The hub cannot be reached. Try again in a moment.',
    'signin.devHint': 'In development mode the hub prints a ready-made dashboard link when it starts.',
    'signout': 'Sign out',
    'role.admin': 'Admin',
    'role.dispatcher': 'Dispatcher',
    'role.driver': 'Driver',
    'fleet.all': 'all fleets',
    'fleet.label': 'Fleet',
    'node.label': 'Node',
    'conn.connecting': 'Connecting',
    'conn.live': 'Live',
    'conn.reconnecting': 'Reconnecting',
    'conn.offline': 'Offline',
    'conn.label': 'Connection',
    'conn.retryIn': 'Retrying in {s} s',
    'drivers.title': 'Drivers',
    'drivers.search': 'Search by id',
    'drivers.statusFilter': 'Status',
    'drivers.onlyInView': 'Only in map view',
    'drivers.count': '{shown} of {total}',
    'drivers.empty': 'No drivers match.',
    'drivers.following': 'Following {id}',
    'drivers.stopFollowing': 'Stop following',
    'drivers.speed': '{v} km/h',
    'drivers.noSpeed': '—',
    'drivers.trail': 'Trail',
    'drivers.trailFor': 'Replay the trail of {id}',
    'drivers.inFleet': '{id} · {fleet}',
    'status.all': 'All',
    'status.moving': 'Moving',
    'status.stopped': 'Stopped',
    'status.offline': 'Offline',
    'time.now': 'just now',
    'time.s': '{n} s ago',
    'time.m': '{n} min ago',
    'time.h': '{n} h ago',
    'time.d': '{n} d ago',
    'time.never': 'never',
    'trail.title': 'Trail replay',
    'trail.driver': 'Driver',
    'trail.from': 'From',
    'trail.to': 'To',
    'trail.load': 'Show trail',
    'trail.loading': 'Loading the trail…',
    'trail.clear': 'Close',
    'trail.play': 'Play',
    'trail.pause': 'Pause',
    'trail.speed': 'Playback speed',
    'trail.slider': 'Position in the trail',
    'trail.none': 'No trail for {id} in that time range.',
    'trail.unavailable': 'Trail history is not available on this hub yet.',
    'trail.error': 'The trail could not be loaded ({msg}).',
    'trail.badRange': 'The start must be before the end.',
    'trail.needDriver': 'Choose a driver first.',
    'trail.needFleet': 'Several fleets have a driver {id}: choose the fleet.',
    'trail.points': 'Points',
    'trail.distance': 'Distance',
    'trail.duration': 'Duration',
    'trail.maxSpeed': 'Top speed',
    'trail.avgSpeed': 'Average speed',
    'map.label': 'Live map of the fleet',
    'map.outline': 'Offline base map (Natural Earth)',
    'map.tilesFailed': 'Map tiles could not be loaded; showing the offline outline.',
    'legend.title': 'Legend',
    'error.generic': 'Hub error: {msg}',
    'units.km': '{v} km',
    'units.kmh': '{v} km/h',
    'fences.toggle': 'Geofences',
    'fences.refresh': 'Reload the geofences',
    'fences.failed': 'The geofences could not be loaded ({msg}).',
    'events.title': 'Events',
    'events.empty': 'No events yet.',
    'events.showOnMap': 'Show on the map',
    'events.place': '{lat}, {lon}',
    'event.geofence_enter': 'Entered geofence {name}',
    'event.geofence_exit': 'Left geofence {name}',
    'event.geofence_dwell': 'Stayed too long in geofence {name}',
    'event.geofence_dwell_for': 'In geofence {name} for {dur}',
    'event.geofence_cross': 'Crossed geofence {name}',
    'event.overspeed': 'Overspeed: {speed} km/h (limit {limit})',
    'event.overspeed_nolimit': 'Overspeed: {speed} km/h',
    'event.idle': 'Stopped for {dur}',
    'event.idle_plain': 'Stopped too long',
    'event.offline': 'Went silent (last seen {time})',
    'event.offline_plain': 'Went silent',
    'event.low_battery': 'Low battery: {pct} %',
    'event.low_battery_plain': 'Low battery',
    'event.sos': 'SOS: emergency button pressed',
    'event.other': 'Event: {kind}',
    'sos.label': 'SOS: {id}',
    'sos.since': 'at {time}',
    'sos.show': 'Show',
    'sos.ack': 'Acknowledge',
    'sos.ackFor': 'Acknowledge the SOS of {id}',
    'units.s': '{v} s',
    'units.min': '{v} min',
    'units.hmin': '{h} h {m} min',
    'units.dh': '{d} d {h} h',
  },
  es: {
    'app.title': 'fleethub — despacho',
    'app.skip': 'Saltar a la lista de conductores',
    'lang.label': 'Idioma',
    'signin.title': 'Iniciar sesión',
    'signin.intro': 'Pegue un token de acceso de despachador o administrador. Solo se guarda en esta pestaña.',
    'signin.token': 'Token de acceso',
    'signin.submit': 'Entrar',
    'signin.checking': 'Comprobando el token…',
    'signin.expired': 'Su sesión ha caducado. Vuelva a iniciar sesión.',
    'signin.invalid': 'Ese token no fue aceptado.',
    'signin.wrongRole': 'Este token es de un conductor. Use un token de despachador o administrador.',
    'signin.unreachable': 'No se puede contactar con el hub. Inténtelo de nuevo en un momento.',
    'signin.devHint': 'En modo desarrollo el hub muestra al arrancar un enlace listo para el panel.',
    'signout': 'Cerrar sesión',
    'role.admin': 'Administrador',
    'role.dispatcher': 'Despachador',
    'role.driver': 'Conductor',
    'fleet.all': 'todas las flotas',
    'fleet.label': 'Flota',
    'node.label': 'Nodo',
    'conn.connecting': 'Conectando',
    'conn.live': 'En vivo',
    'conn.reconnecting': 'Reconectando',
    'conn.offline': 'Sin conexión',
    'conn.label': 'Conexión',
    'conn.retryIn': 'Reintento en {s} s',
    'drivers.title': 'Conductores',
    'drivers.search': 'Buscar por id',
    'drivers.statusFilter': 'Estado',
    'drivers.onlyInView': 'Solo en la vista del mapa',
    'drivers.count': '{shown} de {total}',
    'drivers.empty': 'Ningún conductor coincide.',
    'drivers.following': 'Siguiendo a {id}',
    'drivers.stopFollowing': 'Dejar de seguir',
    'drivers.speed': '{v} km/h',
    'drivers.noSpeed': '—',
    'drivers.trail': 'Recorrido',
    'drivers.trailFor': 'Reproducir el recorrido de {id}',
    'drivers.inFleet': '{id} · {fleet}',
    'status.all': 'Todos',
    'status.moving': 'En marcha',
    'status.stopped': 'Detenido',
    'status.offline': 'Desconectado',
    'time.now': 'ahora mismo',
    'time.s': 'hace {n} s',
    'time.m': 'hace {n} min',
    'time.h': 'hace {n} h',
    'time.d': 'hace {n} d',
    'time.never': 'nunca',
    'trail.title': 'Reproducir recorrido',
    'trail.driver': 'Conductor',
    'trail.from': 'Desde',
    'trail.to': 'Hasta',
    'trail.load': 'Ver recorrido',
    'trail.loading': 'Cargando el recorrido…',
    'trail.clear': 'Cerrar',
    'trail.play': 'Reproducir',
    'trail.pause': 'Pausa',
    'trail.speed': 'Velocidad de reproducción',
    'trail.slider': 'Posición en el recorrido',
    'trail.none': 'No hay recorrido de {id} en ese intervalo.',
    'trail.unavailable': 'El historial de recorridos aún no está disponible en este hub.',
    'trail.error': 'No se pudo cargar el recorrido ({msg}).',
    'trail.badRange': 'El inicio debe ser anterior al final.',
    'trail.needDriver': 'Elija primero un conductor.',
    'trail.needFleet': 'Varias flotas tienen un conductor {id}: elija la flota.',
    'trail.points': 'Puntos',
    'trail.distance': 'Distancia',
    'trail.duration': 'Duración',
    'trail.maxSpeed': 'Velocidad máxima',
    'trail.avgSpeed': 'Velocidad media',
    'map.label': 'Mapa en vivo de la flota',
    'map.outline': 'Mapa base sin conexión (Natural Earth)',
    'map.tilesFailed': 'No se pudieron cargar los mosaicos del mapa; se muestra el contorno sin conexión.',
    'legend.title': 'Leyenda',
    'error.generic': 'Error del hub: {msg}',
    'units.km': '{v} km',
    'units.kmh': '{v} km/h',
    'fences.toggle': 'Geocercas',
    'fences.refresh': 'Recargar las geocercas',
    'fences.failed': 'No se pudieron cargar las geocercas ({msg}).',
    'events.title': 'Eventos',
    'events.empty': 'Aún no hay eventos.',
    'events.showOnMap': 'Ver en el mapa',
    'events.place': '{lat}, {lon}',
    'event.geofence_enter': 'Entró en la geocerca {name}',
    'event.geofence_exit': 'Salió de la geocerca {name}',
    'event.geofence_dwell': 'Permanencia prolongada en la geocerca {name}',
    'event.geofence_dwell_for': 'En la geocerca {name} desde hace {dur}',
    'event.geofence_cross': 'Atravesó la geocerca {name}',
    'event.overspeed': 'Exceso de velocidad: {speed} km/h (límite {limit})',
    'event.overspeed_nolimit': 'Exceso de velocidad: {speed} km/h',
    'event.idle': 'Detenido durante {dur}',
    'event.idle_plain': 'Detenido demasiado tiempo',
    'event.offline': 'Sin señal (visto por última vez a las {time})',
    'event.offline_plain': 'Sin señal',
    'event.low_battery': 'Batería baja: {pct} %',
    'event.low_battery_plain': 'Batería baja',
    'event.sos': 'SOS: botón de emergencia pulsado',
    'event.other': 'Evento: {kind}',
    'sos.label': 'SOS: {id}',
    'sos.since': 'a las {time}',
    'sos.show': 'Ver',
    'sos.ack': 'Atendido',
    'sos.ackFor': 'Marcar como atendido el SOS de {id}',
    'units.s': '{v} s',
    'units.min': '{v} min',
    'units.hmin': '{h} h {m} min',
    'units.dh': '{d} d {h} h',
  },
};

export const LANGUAGES = ['es', 'en'];
const STORAGE_KEY = 'fleethub.lang';
const listeners = new Set();
let current = pickInitial();

/** A saved choice wins; otherwise the first of the browser's languages we have. */
function pickInitial() {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (LANGUAGES.includes(saved)) return saved;
  } catch {
    // Storage can be disabled (privacy modes); fall through to the browser's wish.
  }
  for (const tag of navigator.languages ?? [navigator.language]) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return 'en';
}

export function lang() {
  return current;
}

/** Looks a key up and fills {placeholders}; a missing key shows itself so it gets noticed. */
export function t(key, params) {
  const s = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  if (!params) return s;
  return s.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

export function setLang(next) {
  if (!LANGUAGES.includes(next) || next === current) return;
  current = next;
  try {
    localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // Not persisted; the switch still applies to this page.
  }
  translateDom();
  for (const fn of listeners) fn(current);
}

/** Called after a language change (for text built in code rather than markup). */
export function onLangChange(fn) {
  listeners.add(fn);
}

export function translateDom(root = document) {
  document.documentElement.lang = current;
  if (root === document) document.title = t('app.title');
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const [attr, data] of [
    ['placeholder', 'i18nPlaceholder'],
    ['title', 'i18nTitle'],
    ['aria-label', 'i18nAriaLabel'],
  ]) {
    for (const el of root.querySelectorAll(`[data-${attr === 'aria-label' ? 'i18n-aria-label' : `i18n-${attr}`}]`)) {
      el.setAttribute(attr, t(el.dataset[data]));
    }
  }
}

/** Number formatting follows the UI language (decimal comma in Spanish). */
export function fmtNumber(v, digits = 0) {
  return new Intl.NumberFormat(current === 'es' ? 'es-PE' : 'en-GB', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  }).format(v);
}

/** "12 s ago" / "hace 12 s" from a ms timestamp. */
export function relativeTime(ms, now = Date.now()) {
  if (!ms) return t('time.never');
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 5) return t('time.now');
  if (s < 60) return t('time.s', { n: s });
  if (s < 3600) return t('time.m', { n: Math.floor(s / 60) });
  if (s < 86400) return t('time.h', { n: Math.floor(s / 3600) });
  return t('time.d', { n: Math.floor(s / 86400) });
}
