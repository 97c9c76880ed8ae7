//! Where the simulated vehicles drive: a named bounding box.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A geographic box, `[west, south, east, north]` in degrees, as the wire
/// protocol's `bbox`. `west > east` crosses the antimeridian.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bbox {
    pub west: f64,
    pub south: f64,
    pub east: f64,
    pub north: f64,
}

impl Bbox {
    pub fn new(west: f64, south: f64, east: f64, north: f64) -> anyhow::Result<Self> {
        let finite = [west, south, east, north].iter().all(|v| v.is_finite());
        anyhow::ensure!(finite, "bbox values must be finite numbers");
        anyhow::ensure!(
            (-90.0..=90.0).contains(&south) && (-90.0..=90.0).contains(&north) && south < north,
            "bbox needs -90 <= south < north <= 90"
        );
        anyhow::ensure!(
            (-180.0..=180.0).contains(&west) && (-180.0..=180.0).contains(&east) && west != east,
            "bbox needs west and east in [-180, 180] and different"
        );
        Ok(Self {
            west,
            south,
            east,
            north,
        })
    }

    /// Same rule as the hub: bounds inclusive, `west > east` wraps.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        let lat_ok = lat >= self.south && lat <= self.north;
        let lon_ok = if self.west <= self.east {
            lon >= self.west && lon <= self.east
        } else {
            lon >= self.west || lon <= self.east
        };
        lat_ok && lon_ok
    }

    /// Width in degrees of longitude, counting across the antimeridian.
    pub fn width(&self) -> f64 {
        if self.west <= self.east {
            self.east - self.west
        } else {
            360.0 - self.west + self.east
        }
    }

    pub fn height(&self) -> f64 {
        self.north - self.south
    }

    /// The four numbers in wire order.
    pub fn to_array(self) -> [f64; 4] {
        [self.west, self.south, self.east, self.north]
    }
}

/// A city the simulator drives in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct City {
    pub name: String,
    pub bbox: Bbox,
}

impl City {
    /// Lima, Peru: the default (the product's first customer drives there).
    pub fn lima() -> Self {
        Self::preset("lima", [-77.12, -12.18, -76.95, -11.98])
    }

    pub fn panama() -> Self {
        Self::preset("panama", [-79.60, 8.95, -79.45, 9.07])
    }

    pub fn paris() -> Self {
        Self::preset("paris", [2.25, 48.815, 2.42, 48.90])
    }

    /// Every named preset, for `--city` and the docs.
    pub fn presets() -> Vec<City> {
        vec![Self::lima(), Self::panama(), Self::paris()]
    }

    /// A custom city from a box.
    pub fn from_bbox(name: impl Into<String>, bbox: Bbox) -> Self {
        Self {
            name: name.into(),
            bbox,
        }
    }

    fn preset(name: &str, [w, s, e, n]: [f64; 4]) -> Self {
        Self {
            name: name.to_owned(),
            bbox: Bbox {
                west: w,
                south: s,
                east: e,
                north: n,
            },
        }
    }
}

impl Default for City {
    fn default() -> Self {
        Self::lima()
    }
}

impl fmt::Display for City {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.bbox;
        write!(
            f,
            "{} [{}, {}, {}, {}]",
            self.name, b.west, b.south, b.east, b.north
        )
    }
}

/// `lima`, `panama`, `paris`, or `west,south,east,north`.
impl FromStr for City {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim().to_ascii_lowercase();
        if let Some(city) = Self::presets().into_iter().find(|c| c.name == key) {
            return Ok(city);
        }
        let parts: Vec<f64> = key
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                anyhow::anyhow!("unknown city `{s}`: use lima, panama, paris or w,s,e,n")
            })?;
        let [w, so, e, n] = parts[..] else {
            anyhow::bail!("a city box needs four numbers: west,south,east,north");
        };
        Ok(Self::from_bbox("custom", Bbox::new(w, so, e, n)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_boxes_parse() {
        assert_eq!("Lima".parse::<City>().unwrap(), City::lima());
        let c: City = "-77.1,-12.1,-77.0,-12.0".parse().unwrap();
        assert_eq!(c.bbox.to_array(), [-77.1, -12.1, -77.0, -12.0]);
        assert!("atlantis".parse::<City>().is_err());
        assert!("1,2,3".parse::<City>().is_err());
    }

    #[test]
    fn antimeridian_box_wraps() {
        let b = Bbox::new(170.0, -20.0, -170.0, -10.0).unwrap();
        assert!(b.contains(-15.0, 179.0));
        assert!(b.contains(-15.0, -175.0));
        assert!(!b.contains(-15.0, 0.0));
        assert!((b.width() - 20.0).abs() < 1e-9);
    }
}
