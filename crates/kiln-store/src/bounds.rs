//! How much of an image from elsewhere kiln reads before it refuses it (SECURITY.md
//! rule 7): a hostile registry, OCI layout or tarball must not make kiln use unbounded
//! memory, disk or time. Every bound has a default, a config key (`image_limits:` in
//! kiln's config file; the key names are [`Bound::key`]) and a ceiling the key cannot go
//! past.
//!
//! The bounds apply where content enters the store: `kiln pull`, `from: oci:` and
//! `from: rootfs:`, `kiln import`. What is in the store passed them on the way in; when a
//! layer dir is made again from a stored blob, only the ceilings ([`Bounds::CEILINGS`])
//! apply, so lowering a bound never makes an image already pulled unusable.

/// One bound, for messages and the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    DocumentSize,
    IndexDepth,
    Layers,
    LayerEntries,
    PathLength,
    LayerSize,
    CompressionRatio,
    RatioAfter,
    ImageSize,
}

impl Bound {
    pub const ALL: [Bound; 9] = [
        Bound::DocumentSize,
        Bound::IndexDepth,
        Bound::Layers,
        Bound::LayerEntries,
        Bound::PathLength,
        Bound::LayerSize,
        Bound::CompressionRatio,
        Bound::RatioAfter,
        Bound::ImageSize,
    ];

    /// Its key under `image_limits:` in kiln's config file.
    pub fn key(self) -> &'static str {
        match self {
            Bound::DocumentSize => "document_size",
            Bound::IndexDepth => "index_depth",
            Bound::Layers => "layers",
            Bound::LayerEntries => "layer_entries",
            Bound::PathLength => "path_length",
            Bound::LayerSize => "layer_size",
            Bound::CompressionRatio => "compression_ratio",
            Bound::RatioAfter => "ratio_after",
            Bound::ImageSize => "image_size",
        }
    }

    /// Whether its value is a number of bytes (written `4m`, `64g` in the config file).
    pub fn is_size(self) -> bool {
        matches!(
            self,
            Bound::DocumentSize | Bound::LayerSize | Bound::RatioAfter | Bound::ImageSize
        )
    }

    /// The hint of an error that hit this bound.
    pub fn hint(self) -> String {
        format!(
            "if the image is trusted, raise image_limits: {{ {}: … }} in kiln's config file",
            self.key()
        )
    }
}

/// The bounds in force. [`Default`] gives kiln's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// Bytes of one manifest, index or image config. Default 4 MiB.
    pub document_size: u64,
    /// Indexes followed from the reference (or `index.json`) to the image manifest: 1 is
    /// an ordinary multi-platform image; more are nested indexes. Default 4.
    pub index_depth: u64,
    /// Layers of one image. Default 500, overlayfs's own limit on lower dirs.
    pub layers: u64,
    /// Tar entries (files, dirs, links, whiteouts…) of one layer. Default 1,000,000.
    pub layer_entries: u64,
    /// Bytes of one path or link target in a layer, after normalisation. Default 4096
    /// (PATH_MAX), which is also its ceiling.
    pub path_length: u64,
    /// Uncompressed bytes of one layer (its tar stream). Default 64 GiB.
    pub layer_size: u64,
    /// Largest ratio of a layer's uncompressed to compressed bytes, checked once
    /// `ratio_after` bytes were decompressed (stops decompression bombs early). Default 1000.
    pub compression_ratio: u64,
    /// Uncompressed bytes of a layer before `compression_ratio` applies. Default 1 GiB.
    pub ratio_after: u64,
    /// Bytes of one image as stored: its manifest, config and layer blobs together, as
    /// their descriptors give them, known before anything is downloaded. Default 256 GiB.
    pub image_size: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            document_size: 4 << 20,
            index_depth: 4,
            layers: 500,
            layer_entries: 1_000_000,
            path_length: 4096,
            layer_size: 64 << 30,
            compression_ratio: 1000,
            ratio_after: 1 << 30,
            image_size: 256 << 30,
        }
    }
}

impl Bounds {
    /// The largest value each bound may be given; also what applies to blobs already in the
    /// store.
    pub const CEILINGS: Bounds = Bounds {
        document_size: crate::MAX_DOCUMENT,
        index_depth: 16,
        layers: 4096,
        layer_entries: 100_000_000,
        path_length: 4096,
        layer_size: 16 << 40,
        compression_ratio: 1_000_000,
        ratio_after: 16 << 40,
        image_size: 64 << 40,
    };

    pub fn get(&self, bound: Bound) -> u64 {
        match bound {
            Bound::DocumentSize => self.document_size,
            Bound::IndexDepth => self.index_depth,
            Bound::Layers => self.layers,
            Bound::LayerEntries => self.layer_entries,
            Bound::PathLength => self.path_length,
            Bound::LayerSize => self.layer_size,
            Bound::CompressionRatio => self.compression_ratio,
            Bound::RatioAfter => self.ratio_after,
            Bound::ImageSize => self.image_size,
        }
    }

    /// Sets one bound, refusing 0 and values past its ceiling; the error says the range.
    pub fn set(&mut self, bound: Bound, value: u64) -> Result<(), String> {
        let ceiling = Bounds::CEILINGS.get(bound);
        // A ratio bound of 0 would refuse every layer; the others would refuse everything.
        if value == 0 || value > ceiling {
            return Err(format!(
                "{}: {value} is outside 1 to {ceiling}",
                bound.key()
            ));
        }
        let field = match bound {
            Bound::DocumentSize => &mut self.document_size,
            Bound::IndexDepth => &mut self.index_depth,
            Bound::Layers => &mut self.layers,
            Bound::LayerEntries => &mut self.layer_entries,
            Bound::PathLength => &mut self.path_length,
            Bound::LayerSize => &mut self.layer_size,
            Bound::CompressionRatio => &mut self.compression_ratio,
            Bound::RatioAfter => &mut self.ratio_after,
            Bound::ImageSize => &mut self.image_size,
        };
        *field = value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_within_their_ceilings() {
        let defaults = Bounds::default();
        for bound in Bound::ALL {
            assert!(defaults.get(bound) >= 1, "{}", bound.key());
            assert!(
                defaults.get(bound) <= Bounds::CEILINGS.get(bound),
                "{}",
                bound.key()
            );
        }
    }

    #[test]
    fn set_refuses_zero_and_past_the_ceiling() {
        let mut b = Bounds::default();
        assert!(b.set(Bound::Layers, 0).is_err());
        assert!(b.set(Bound::PathLength, 4097).is_err());
        b.set(Bound::Layers, 3).unwrap();
        assert_eq!(b.layers, 3);
        let err = b.set(Bound::IndexDepth, 17).unwrap_err();
        assert!(
            err.contains("index_depth") && err.contains("1 to 16"),
            "{err}"
        );
    }
}
