/// A map region: `[west, south, east, north]` in degrees. When `west > east`
/// the box crosses the antimeridian (e.g. west 170, east -170 spans Fiji).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    west: f64,
    south: f64,
    east: f64,
    north: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BBoxError {
    #[error("bbox longitudes must be finite numbers in [-180, 180]")]
    Longitude,
    #[error("bbox latitudes must be finite numbers in [-90, 90] with south <= north")]
    Latitude,
}

impl BBox {
    pub fn new(west: f64, south: f64, east: f64, north: f64) -> Result<Self, BBoxError> {
        let lon_ok = |v: f64| v.is_finite() && (-180.0..=180.0).contains(&v);
        let lat_ok = |v: f64| v.is_finite() && (-90.0..=90.0).contains(&v);
        if !lon_ok(west) || !lon_ok(east) {
            return Err(BBoxError::Longitude);
        }
        if !lat_ok(south) || !lat_ok(north) || south > north {
            return Err(BBoxError::Latitude);
        }
        Ok(Self {
            west,
            south,
            east,
            north,
        })
    }

    /// The whole world.
    pub fn world() -> Self {
        Self {
            west: -180.0,
            south: -90.0,
            east: 180.0,
            north: 90.0,
        }
    }

    pub fn west(&self) -> f64 {
        self.west
    }
    pub fn south(&self) -> f64 {
        self.south
    }
    pub fn east(&self) -> f64 {
        self.east
    }
    pub fn north(&self) -> f64 {
        self.north
    }

    pub fn crosses_antimeridian(&self) -> bool {
        self.west > self.east
    }

    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        if lat < self.south || lat > self.north {
            return false;
        }
        if self.crosses_antimeridian() {
            lon >= self.west || lon <= self.east
        } else {
            lon >= self.west && lon <= self.east
        }
    }

    /// The box as one or two non-crossing pieces, `(west, east)` longitude spans.
    pub fn lon_spans(&self) -> impl Iterator<Item = (f64, f64)> {
        let (first, second) = if self.crosses_antimeridian() {
            ((self.west, 180.0), Some((-180.0, self.east)))
        } else {
            ((self.west, self.east), None)
        };
        std::iter::once(first).chain(second)
    }

    /// `[west, south, east, north]`, checked like [`BBox::new`].
    pub fn from_array([west, south, east, north]: [f64; 4]) -> Result<Self, BBoxError> {
        Self::new(west, south, east, north)
    }

    pub fn as_array(&self) -> [f64; 4] {
        [self.west, self.south, self.east, self.north]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_box_contains_its_inside_only() {
        let b = BBox::new(-77.2, -12.3, -76.8, -11.9).unwrap();
        assert!(b.contains(-12.05, -77.04));
        assert!(!b.contains(-12.05, -76.0));
        assert!(!b.contains(-13.0, -77.04));
    }

    #[test]
    fn a_box_crossing_the_antimeridian_wraps() {
        let b = BBox::new(170.0, -20.0, -170.0, -10.0).unwrap();
        assert!(b.crosses_antimeridian());
        assert!(b.contains(-15.0, 179.0));
        assert!(b.contains(-15.0, -179.0));
        assert!(!b.contains(-15.0, 0.0));
        assert_eq!(b.lon_spans().count(), 2);
    }

    #[test]
    fn boxes_reject_bad_numbers() {
        assert_eq!(BBox::new(-181.0, 0.0, 0.0, 1.0), Err(BBoxError::Longitude));
        assert_eq!(BBox::new(0.0, 2.0, 1.0, 1.0), Err(BBoxError::Latitude));
        assert_eq!(BBox::new(0.0, f64::NAN, 1.0, 1.0), Err(BBoxError::Latitude));
    }
}
