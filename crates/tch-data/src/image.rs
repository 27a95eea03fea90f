//! Decoding JPEG and PNG files into 8-bit RGB, as PIL's `Image.open(f).convert("RGB")` does for
//! torchvision's `ImageFolder`: grayscale, CMYK, palette and 16-bit images all come out RGB.

use std::io::Cursor;

/// An 8-bit RGB image, row by row, each pixel's three bytes together (height x width x 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// An image of `width` x `height` from its pixels (`width * height * 3` bytes).
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Result<RgbImage, String> {
        let expected = width as usize * height as usize * 3;
        if pixels.len() != expected || width == 0 || height == 0 {
            return Err(format!(
                "{} bytes for a {width}x{height} RGB image (expected {expected}, and no empty side)",
                pixels.len()
            ));
        }
        Ok(RgbImage {
            width,
            height,
            pixels,
        })
    }
}

/// The file extensions an image folder takes (lower case), as torchvision's `IMG_EXTENSIONS`
/// narrowed to the formats decoded here.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// Decodes a JPEG or PNG file's bytes, whatever its extension says.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, String> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        decode_jpeg(bytes)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes)
    } else if bytes.is_empty() {
        Err("empty file".to_owned())
    } else {
        Err("not a JPEG or PNG image".to_owned())
    }
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    // Strict: a truncated or corrupt file is an error, not a gray bottom half.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(Cursor::new(bytes), options);
    let pixels = decoder
        .decode()
        .map_err(|e| format!("cannot decode JPEG: {e:?}"))?;
    let info = decoder
        .info()
        .ok_or_else(|| "cannot decode JPEG: no header".to_owned())?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let components = pixels.len() / (width as usize * height as usize).max(1);
    match components {
        3 => RgbImage::new(width, height, pixels),
        1 => RgbImage::new(width, height, gray_to_rgb(&pixels, 1)),
        n => Err(format!("JPEG decoded to {n} channels, expected RGB")),
    }
}

fn decode_png(bytes: &[u8]) -> Result<RgbImage, String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    // Palette and low bit depths expanded, 16 bits cut to 8: then only the channel count varies.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("cannot decode PNG: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "cannot decode PNG: image too large".to_owned())?;
    let mut buffer = vec![0; size];
    let frame = reader
        .next_frame(&mut buffer)
        .map_err(|e| format!("cannot decode PNG: {e}"))?;
    buffer.truncate(frame.buffer_size());
    let (width, height) = (frame.width, frame.height);
    let pixels = match frame.color_type {
        png::ColorType::Rgb => buffer,
        png::ColorType::Rgba => buffer
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => gray_to_rgb(&buffer, 1),
        png::ColorType::GrayscaleAlpha => gray_to_rgb(&buffer, 2),
        png::ColorType::Indexed => return Err("cannot decode PNG: palette not expanded".into()),
    };
    RgbImage::new(width, height, pixels)
}

/// Gray (with `stride` bytes per pixel, the first gray) to RGB.
fn gray_to_rgb(gray: &[u8], stride: usize) -> Vec<u8> {
    gray.chunks_exact(stride).flat_map(|p| [p[0]; 3]).collect()
}
