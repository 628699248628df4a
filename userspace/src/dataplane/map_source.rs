//! Where the controller's parts take the data plane's maps from: the object a controller
//! loaded, or the pins of a guard that runs without one (the read verbs and the lists work
//! then too). Either way a part gets the same maps, so it works one way.

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{Map, MapData, MapError},
};

use crate::dataplane::persist::Pins;

/// Gives out the data plane's maps by name, each once.
pub trait MapSource {
    fn take_map(&mut self, name: &str) -> Result<Map>;

    /// The map `name` as the typed map `T`.
    fn take<T: TryFrom<Map, Error = MapError>>(&mut self, name: &str) -> Result<T>
    where
        Self: Sized,
    {
        T::try_from(self.take_map(name)?).with_context(|| format!("map {name}"))
    }
}

impl MapSource for Ebpf {
    fn take_map(&mut self, name: &str) -> Result<Map> {
        Ebpf::take_map(self, name)
            .with_context(|| format!("map {name} missing from the eBPF object"))
    }
}

impl MapSource for Pins {
    fn take_map(&mut self, name: &str) -> Result<Map> {
        let path = self.dir.join(name);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening the pinned map {}", path.display()))?;
        Map::from_map_data(data).with_context(|| format!("the pinned map {}", path.display()))
    }
}
