//! `Display` for arrays in MLX's format (placeholder: extended by the display work).

use crate::array::Array;
use std::fmt;

impl fmt::Display for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Err(e) = self.eval() {
            return write!(f, "array(<error: {e}>)");
        }
        let v: Vec<String> = crate::dispatch_dtype!(self.dtype(), T => {
            self.to_vec::<T>().unwrap_or_default().iter().map(|x| format!("{x:?}")).collect()
        });
        write!(f, "array([{}], shape={:?}, dtype={})", v.join(", "), self.shape(), self.dtype())
    }
}
