// The map: MapLibre with an offline-first base map, the vehicles as one
// clustered GeoJSON source drawn by WebGL layers, and the trail replay layers.
// No glyph server is reachable offline, so nothing here uses text fields:
// cluster counts and vehicle markers are small canvas images added at run time.

import * as maplibregl from '../vendor/maplibre-gl/maplibre-gl.mjs';

export const COLORS = {
  moving: '#34d399',
  stopped: '#fbbf24',
  offline: '#94a3b8',
  selected: '#60a5fa',
  trail: '#60a5fa',
  fence: '#c084fc',
  sos: '#ef4444',
};

export const FENCE_LAYERS = ['fence-fill', 'fence-corridor', 'fence-line', 'fence-centre', 'fence-label'];
const CLUSTER_MAX_ZOOM = 10; // Above this every vehicle is drawn; below, nearby ones merge.
const LIMA = [-77.04, -12.05];

/** Normalises a longitude to [-180, 180]. */
function wrapLon(x) {
  const w = ((((x + 180) % 360) + 360) % 360) - 180;
  return w === -180 && x > 0 ? 180 : w;
}

const round5 = (v) => Math.round(v * 1e5) / 1e5;

/**
 * The subscription box for what the map shows: clamped to the valid ranges,
 * west > east when the view crosses the antimeridian, the whole world when
 * zoomed out that far. Exported for the tests.
 */
export function viewBbox(west, south, east, north) {
  let s = Math.max(-90, Math.min(90, south));
  let n = Math.max(-90, Math.min(90, north));
  // Web Mercator stops at ~85.05°: a view reaching it reaches the pole.
  if (s <= -85) s = -90;
  if (n >= 85) n = 90;
  if (east - west >= 360) return [-180, round5(s), 180, round5(n)];
  const w = wrapLon(west);
  let e = wrapLon(east);
  if (e === -180 && east > west) e = 180;
  return [round5(w), round5(s), round5(e), round5(n)];
}

/** Canvas image for MapLibre's addImage. */
function canvasImage(size, draw) {
  const ratio = 2; // drawn at 2x so markers stay crisp on high-density screens
  const c = document.createElement('canvas');
  c.width = c.height = size * ratio;
  const ctx = c.getContext('2d');
  ctx.scale(ratio, ratio);
  draw(ctx, size);
  return { image: ctx.getImageData(0, 0, size * ratio, size * ratio), pixelRatio: ratio };
}

function arrowImage(color) {
  return canvasImage(26, (ctx, s) => {
    // A chevron pointing north; icon-rotate turns it to the heading.
    ctx.beginPath();
    ctx.moveTo(s / 2, 2.5);
    ctx.lineTo(s - 5, s - 4);
    ctx.lineTo(s / 2, s - 8.5);
    ctx.lineTo(5, s - 4);
    ctx.closePath();
    ctx.fillStyle = color;
    ctx.strokeStyle = '#0b1220';
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    ctx.stroke();
    ctx.fill();
  });
}

function dotImage(color) {
  return canvasImage(18, (ctx, s) => {
    ctx.beginPath();
    ctx.arc(s / 2, s / 2, s / 2 - 3, 0, Math.PI * 2);
    ctx.fillStyle = color;
    ctx.strokeStyle = '#0b1220';
    ctx.lineWidth = 2;
    ctx.stroke();
    ctx.fill();
  });
}

/** The count written on a cluster bubble; made on demand for each distinct label. */
function countImage(label) {
  const width = Math.max(22, 8 + label.length * 8);
  const ratio = 2;
  const c = document.createElement('canvas');
  c.width = width * ratio;
  c.height = 18 * ratio;
  const ctx = c.getContext('2d');
  ctx.scale(ratio, ratio);
  ctx.font = '600 12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillStyle = '#0b1220';
  ctx.fillText(label, width / 2, 9.5);
  return { image: ctx.getImageData(0, 0, c.width, c.height), pixelRatio: ratio };
}

/** A fence's name on a dark pill ("fence:<name>"), made the first time a label is in view. */
function fenceLabelImage(text) {
  const ratio = 2;
  const font = '600 12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
  const probe = document.createElement('canvas').getContext('2d');
  probe.font = font;
  const width = Math.ceil(Math.min(320, probe.measureText(text).width + 14));
  const c = document.createElement('canvas');
  c.width = width * ratio;
  c.height = 20 * ratio;
  const ctx = c.getContext('2d');
  ctx.scale(ratio, ratio);
  ctx.fillStyle = 'rgba(11, 18, 32, 0.82)';
  ctx.strokeStyle = COLORS.fence;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.roundRect(0.5, 0.5, width - 1, 19, 6);
  ctx.fill();
  ctx.stroke();
  ctx.font = font;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillStyle = '#f3e8ff';
  ctx.fillText(text, width / 2, 10.5, width - 10);
  return { image: ctx.getImageData(0, 0, c.width, c.height), pixelRatio: ratio };
}

function baseStyle(world) {
  return {
    version: 8,
    sources: {
      world: { type: 'geojson', data: world, attribution: 'Natural Earth' },
    },
    layers: [
      { id: 'ocean', type: 'background', paint: { 'background-color': '#0c1422' } },
      {
        id: 'land',
        type: 'fill',
        source: 'world',
        filter: ['==', ['get', 'kind'], 'land'],
        paint: { 'fill-color': '#1a2840', 'fill-antialias': true },
      },
      {
        id: 'coast',
        type: 'line',
        source: 'world',
        filter: ['==', ['get', 'kind'], 'land'],
        paint: { 'line-color': '#39506f', 'line-width': ['interpolate', ['linear'], ['zoom'], 2, 0.6, 10, 1.6] },
      },
      {
        id: 'borders',
        type: 'line',
        source: 'world',
        filter: ['==', ['get', 'kind'], 'border'],
        paint: {
          'line-color': '#3d5270',
          'line-width': ['interpolate', ['linear'], ['zoom'], 2, 0.5, 10, 1.2],
          'line-dasharray': [3, 2],
        },
      },
    ],
  };
}

export class FleetMap {
  /**
   * @param {HTMLElement} container
   * @param {object} uiConfig  from /api/v1/ui-config
   * @param {object} world     GeoJSON of the offline outline
   */
  constructor(container, uiConfig, world) {
    this.selected = null;
    this.easingUntil = 0;
    this.handlers = { vehicleClick: () => {}, userPan: () => {}, tilesFailed: () => {} };
    this.map = new maplibregl.Map({
      container,
      style: baseStyle(world),
      center: LIMA,
      zoom: 11,
      minZoom: 0,
      maxZoom: 19,
      // A dispatch map stays north-up: rotated views make headings harder to read.
      dragRotate: false,
      pitchWithRotate: false,
      touchPitch: false,
      attributionControl: { compact: true },
      fadeDuration: 0, // Markers move every second; fading symbols would smear them.
    });
    this.map.touchZoomRotate.disableRotation();
    this.map.keyboard.disableRotation();
    this.map.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-right');
    this.map.addControl(new maplibregl.ScaleControl({ unit: 'metric' }), 'bottom-right');
    this.ready = new Promise((resolve) => this.map.once('load', resolve)).then(() => {
      this.addTiles(uiConfig);
      this.addVehicleLayers();
      this.addTrailLayers();
      this.addFenceLayers();
    });
    // Images made on demand, the first time a symbol needs one: cluster counts
    // ("cnt:1.2k") and fence names ("fence:Depot"). MapLibre 6 takes them from
    // this resolver; a styleimagemissing listener comes too late for the symbol.
    this.map.setMissingStyleImageResolver((id) => {
      if (this.map.hasImage(id)) return;
      let made = null;
      if (id.startsWith('cnt:')) made = countImage(id.slice(4));
      else if (id.startsWith('fence:')) made = fenceLabelImage(id.slice(6));
      if (made) this.map.addImage(id, made.image, { pixelRatio: made.pixelRatio });
    });
  }

  on(name, fn) {
    this.handlers[name] = fn;
  }

  /** Raster tiles over the outline when configured; if they fail, hide them and keep the outline. */
  addTiles(uiConfig) {
    const url = uiConfig?.tile_url;
    if (!url) return;
    this.map.addSource('tiles', {
      type: 'raster',
      tiles: [url],
      tileSize: 256,
      attribution: uiConfig.tile_attribution || '',
    });
    this.map.addLayer({ id: 'tiles', type: 'raster', source: 'tiles', paint: { 'raster-opacity': 0.9 } }, 'borders');
    let failures = 0;
    let loaded = 0;
    this.map.on('sourcedata', (e) => {
      if (e.sourceId === 'tiles' && e.tile && e.isSourceLoaded) loaded += 1;
    });
    this.map.on('error', (e) => {
      if (e.sourceId !== 'tiles') return;
      failures += 1;
      // A few failures with no success at all means tiles are out of reach
      // (offline, blocked): the outline underneath stays and the user is told once.
      if (failures >= 3 && loaded === 0 && this.map.getLayer('tiles')) {
        this.map.setLayoutProperty('tiles', 'visibility', 'none');
        this.handlers.tilesFailed();
      }
    });
  }

  addVehicleLayers() {
    const m = this.map;
    for (const [status, color] of Object.entries({ moving: COLORS.moving, stopped: COLORS.stopped, offline: COLORS.offline, sos: COLORS.sos })) {
      const arrow = arrowImage(color);
      m.addImage(`arrow-${status}`, arrow.image, { pixelRatio: arrow.pixelRatio });
      const dot = dotImage(color);
      m.addImage(`dot-${status}`, dot.image, { pixelRatio: dot.pixelRatio });
    }
    m.addSource('vehicles', {
      type: 'geojson',
      data: { type: 'FeatureCollection', features: [] },
      cluster: true,
      clusterMaxZoom: CLUSTER_MAX_ZOOM,
      clusterRadius: 44,
      // Counts per status inside each cluster, so a bubble can say "mostly moving".
      clusterProperties: {
        moving: ['+', ['case', ['==', ['get', 's'], 'moving'], 1, 0]],
        offline: ['+', ['case', ['==', ['get', 's'], 'offline'], 1, 0]],
        // Drivers in SOS inside the bubble: it is ringed red so none hides in a cluster.
        sos: ['+', ['case', ['==', ['get', 'sos'], 1], 1, 0]],
      },
      buffer: 32,
    });
    const clustered = ['has', 'point_count'];
    m.addLayer({
      id: 'clusters',
      type: 'circle',
      source: 'vehicles',
      filter: clustered,
      paint: {
        // Colour by the share of moving vehicles in the cluster.
        'circle-color': [
          'interpolate',
          ['linear'],
          ['/', ['get', 'moving'], ['get', 'point_count']],
          0,
          COLORS.stopped,
          0.5,
          '#a3d977',
          1,
          COLORS.moving,
        ],
        'circle-radius': ['step', ['get', 'point_count'], 13, 10, 16, 100, 20, 1000, 26],
        'circle-opacity': 0.9,
        'circle-stroke-color': ['case', ['>', ['get', 'sos'], 0], COLORS.sos, '#0b1220'],
        'circle-stroke-width': ['case', ['>', ['get', 'sos'], 0], 4, 2],
      },
    });
    m.addLayer({
      id: 'cluster-count',
      type: 'symbol',
      source: 'vehicles',
      filter: clustered,
      layout: {
        'icon-image': ['concat', 'cnt:', ['get', 'point_count_abbreviated']],
        'icon-allow-overlap': true,
        'icon-ignore-placement': true,
      },
    });
    const single = ['!', clustered];
    m.addLayer({
      id: 'vehicle-selected',
      type: 'circle',
      source: 'vehicles',
      filter: ['all', single, ['==', ['get', 'key'], '']],
      paint: {
        'circle-radius': 17,
        'circle-color': 'rgba(96,165,250,0.18)',
        'circle-stroke-color': COLORS.selected,
        'circle-stroke-width': 2.5,
      },
    });
    // A driver in SOS: a red ring under its (red) marker, pulsed by setSosPulse.
    m.addLayer({
      id: 'vehicle-sos',
      type: 'circle',
      source: 'vehicles',
      filter: ['all', single, ['==', ['get', 'sos'], 1]],
      paint: {
        'circle-radius': 18,
        'circle-color': 'rgba(239,68,68,0.22)',
        'circle-stroke-color': COLORS.sos,
        'circle-stroke-width': 3,
      },
    });
    m.addLayer({
      id: 'vehicles',
      type: 'symbol',
      source: 'vehicles',
      filter: single,
      layout: {
        'icon-image': [
          'concat',
          ['case', ['==', ['get', 'a'], 1], 'arrow-', 'dot-'],
          ['case', ['==', ['get', 'sos'], 1], 'sos', ['get', 's']],
        ],
        'icon-rotate': ['get', 'h'],
        'icon-rotation-alignment': 'map',
        'icon-allow-overlap': true,
        'icon-ignore-placement': true,
        'icon-size': ['interpolate', ['linear'], ['zoom'], 8, 0.7, 14, 1, 18, 1.25],
        // Offline vehicles underneath, moving ones on top, a driver in SOS above all.
        'symbol-sort-key': ['case', ['==', ['get', 'sos'], 1], 3, ['match', ['get', 's'], 'offline', 0, 'stopped', 1, 2]],
      },
    });

    m.on('click', 'clusters', async (e) => {
      const feature = e.features?.[0];
      if (!feature) return;
      const zoom = await m.getSource('vehicles').getClusterExpansionZoom(feature.properties.cluster_id);
      m.easeTo({ center: feature.geometry.coordinates, zoom });
    });
    m.on('click', 'vehicles', (e) => {
      // The vehicle's key (fleet and driver): a driver id alone may name several.
      const key = e.features?.[0]?.properties?.key;
      if (key) this.handlers.vehicleClick(key);
    });
    for (const layer of ['clusters', 'vehicles']) {
      m.on('mouseenter', layer, () => (m.getCanvas().style.cursor = 'pointer'));
      m.on('mouseleave', layer, () => (m.getCanvas().style.cursor = ''));
    }
    // A user's own pan ends following; zooming with the wheel keeps the vehicle centred.
    m.on('dragstart', () => this.handlers.userPan());
    m.on('movestart', (e) => {
      if (e.originalEvent?.type === 'keydown') this.handlers.userPan();
    });
  }

  addTrailLayers() {
    const m = this.map;
    const trailArrow = arrowImage(COLORS.trail);
    m.addImage('arrow-trail', trailArrow.image, { pixelRatio: trailArrow.pixelRatio });
    const empty = { type: 'FeatureCollection', features: [] };
    m.addSource('trail', { type: 'geojson', data: empty, lineMetrics: true });
    m.addSource('trail-cursor', { type: 'geojson', data: empty });
    m.addLayer(
      {
        id: 'trail-casing',
        type: 'line',
        source: 'trail',
        layout: { 'line-join': 'round', 'line-cap': 'round' },
        paint: { 'line-color': '#0b1220', 'line-width': 7, 'line-opacity': 0.8 },
      },
      'clusters',
    );
    m.addLayer(
      {
        id: 'trail-line',
        type: 'line',
        source: 'trail',
        layout: { 'line-join': 'round', 'line-cap': 'round' },
        paint: {
          'line-width': 4,
          // Older part faint, recent part bright: the direction of travel reads at a glance.
          'line-gradient': ['interpolate', ['linear'], ['line-progress'], 0, 'rgba(96,165,250,0.35)', 1, COLORS.trail],
        },
      },
      'clusters',
    );
    m.addLayer({
      id: 'trail-cursor',
      type: 'symbol',
      source: 'trail-cursor',
      layout: {
        'icon-image': 'arrow-trail',
        'icon-size': 1.3,
        'icon-rotate': ['get', 'h'],
        'icon-rotation-alignment': 'map',
        'icon-allow-overlap': true,
        'icon-ignore-placement': true,
      },
    });
  }

  /**
   * The fences, under the trail and the vehicles: a translucent fill and an
   * outline for polygons and circles, a translucent band of the corridor's width
   * in metres (its pixel width doubles with each zoom level) with its centre line,
   * and the names as labels where they do not collide.
   */
  addFenceLayers() {
    const m = this.map;
    const empty = { type: 'FeatureCollection', features: [] };
    m.addSource('fences', { type: 'geojson', data: empty, tolerance: 0.2 });
    m.addSource('fence-labels', { type: 'geojson', data: empty });
    const areas = ['==', ['geometry-type'], 'Polygon'];
    const corridors = ['==', ['get', 'kind'], 'corridor'];
    const under = 'trail-casing';
    m.addLayer(
      { id: 'fence-fill', type: 'fill', source: 'fences', filter: areas, paint: { 'fill-color': COLORS.fence, 'fill-opacity': 0.12 } },
      under,
    );
    m.addLayer(
      {
        id: 'fence-corridor',
        type: 'line',
        source: 'fences',
        filter: corridors,
        layout: { 'line-join': 'round', 'line-cap': 'round' },
        paint: {
          'line-color': COLORS.fence,
          'line-opacity': 0.22,
          // width_m in pixels: w0 at zoom 0, twice as many at each zoom level up.
          'line-width': ['interpolate', ['exponential', 2], ['zoom'], 0, ['get', 'w0'], 24, ['*', ['get', 'w0'], 2 ** 24]],
        },
      },
      under,
    );
    const outline = {
      'line-color': COLORS.fence,
      'line-opacity': 0.85,
      'line-width': ['interpolate', ['linear'], ['zoom'], 6, 0.8, 14, 1.8],
    };
    m.addLayer({ id: 'fence-line', type: 'line', source: 'fences', filter: areas, layout: { 'line-join': 'round' }, paint: outline }, under);
    m.addLayer(
      {
        id: 'fence-centre',
        type: 'line',
        source: 'fences',
        filter: corridors,
        layout: { 'line-join': 'round' },
        paint: { ...outline, 'line-dasharray': [3, 2] },
      },
      under,
    );
    m.addLayer(
      {
        id: 'fence-label',
        type: 'symbol',
        source: 'fence-labels',
        minzoom: 9,
        layout: { 'icon-image': ['get', 'label'], 'icon-allow-overlap': false, 'icon-padding': 4 },
      },
      'clusters',
    );
  }

  /** The fences' drawing (fences.js fenceDrawing). */
  setFences({ shapes, labels }) {
    this.map.getSource('fences')?.setData(shapes);
    this.map.getSource('fence-labels')?.setData(labels);
  }

  setFencesVisible(visible) {
    for (const id of FENCE_LAYERS) {
      if (this.map.getLayer(id)) this.map.setLayoutProperty(id, 'visibility', visible ? 'visible' : 'none');
    }
  }

  /** One step of the SOS ring's pulse, phase in [0, 1). */
  setSosPulse(phase) {
    if (!this.map.getLayer('vehicle-sos')) return;
    const k = 0.5 - 0.5 * Math.cos(phase * 2 * Math.PI);
    this.map.setPaintProperty('vehicle-sos', 'circle-radius', 15 + 9 * k);
    this.map.setPaintProperty('vehicle-sos', 'circle-stroke-opacity', 1 - 0.6 * k);
  }

  /** Pushes the vehicles' current positions to the GPU source. */
  setVehicles(collection) {
    this.map.getSource('vehicles')?.setData(collection);
  }

  /** Rings the vehicle with this key (keys.js), or none. */
  setSelected(key) {
    this.selected = key;
    if (this.map.getLayer('vehicle-selected')) {
      this.map.setFilter('vehicle-selected', ['all', ['!', ['has', 'point_count']], ['==', ['get', 'key'], key ?? '']]);
    }
  }

  /** The box to subscribe to for the current view. */
  currentBbox() {
    const b = this.map.getBounds();
    return viewBbox(b.getWest(), b.getSouth(), b.getEast(), b.getNorth());
  }

  centreOn(lonLat, { animate = true, minZoom = 14 } = {}) {
    const zoom = Math.max(this.map.getZoom(), minZoom);
    if (animate) {
      // The follow loop must not cut this ease short with its per-frame jumps.
      this.easingUntil = performance.now() + 650;
      this.map.easeTo({ center: lonLat, zoom, duration: 600 });
    }
    else this.map.jumpTo({ center: lonLat });
  }

  setTrail(feature) {
    this.map.getSource('trail')?.setData(feature ?? { type: 'FeatureCollection', features: [] });
  }

  setTrailCursor(lonLat, heading) {
    const data = lonLat
      ? { type: 'Feature', properties: { h: heading ?? 0 }, geometry: { type: 'Point', coordinates: lonLat } }
      : { type: 'FeatureCollection', features: [] };
    this.map.getSource('trail-cursor')?.setData(data);
  }

  fitTo(coords) {
    if (!coords.length) return;
    const bounds = coords.reduce((b, c) => b.extend(c), new maplibregl.LngLatBounds(coords[0], coords[0]));
    // The replay panel covers the bottom of the map: keep the trail above it.
    this.map.fitBounds(bounds, { padding: { top: 70, left: 50, right: 70, bottom: 260 }, maxZoom: 16, duration: 600 });
  }
}
